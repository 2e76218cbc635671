"""Extend it, chapter 00: how the expert count and top-k move Llama 4's total and active parameters.

Scout's config is varied with `replace` (more experts, top-2, MoE in every other layer) and each variant's text
parameters are counted from its shapes alone: total, active per token, and the bfloat16 size of the total. Then
Maverick is rebuilt from Scout with `replace` and its counts compared with the preset's.

    python solutions/extend/ch00_expert_count.py
"""

from minillama4 import Llama4Config

GPU_GB = 80  # one H100


def describe(name: str, c: Llama4Config) -> str:
    total, active = c.num_parameters(), c.num_parameters(active=True)
    gb = 2 * total / 1e9  # bfloat16: 2 bytes per parameter
    fits = "fits" if gb <= GPU_GB else "does not fit"
    return (f"{name:34s} total {total / 1e9:7.1f} B  active {active / 1e9:5.1f} B  ({active / total:5.1%})  "
            f"{gb:6.0f} GB bf16: {fits} on one {GPU_GB} GB GPU")


def main() -> None:
    scout = Llama4Config.preset("scout")
    print("text parameters only (the vision tower is not in the text config)")
    print(describe("Scout (16 experts, top-1)", scout))
    for E in (4, 8, 32, 64, 128):
        print(describe(f"Scout with {E} experts, top-1", scout.replace(num_local_experts=E)))
    print(describe("Scout with 16 experts, top-2", scout.replace(num_experts_per_tok=2)))
    print(describe("Scout, MoE in every other layer", scout.replace(interleave_moe_layer_step=2)))

    # Maverick = Scout with 128 experts in every other layer (dense SwiGLUs between) and no QK-norm
    rebuilt = scout.replace(num_local_experts=128, interleave_moe_layer_step=2, use_qk_norm=False)
    maverick = Llama4Config.preset("maverick")
    print(describe("Scout.replace(...) as Maverick", rebuilt))
    print(describe("Maverick preset", maverick))
    same = (rebuilt.num_parameters(), rebuilt.num_parameters(active=True)) == \
           (maverick.num_parameters(), maverick.num_parameters(active=True))
    print("the rebuilt Maverick has the preset's counts:", same)
    if not same:
        raise SystemExit("the rebuilt Maverick differs from the preset")


if __name__ == "__main__":
    main()
