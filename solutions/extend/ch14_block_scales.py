"""Extend it, chapter 14: block scales (DeepSeek-V3's 128 × 128) against row scales, on mini-Scout's experts.

1. Every expert weight of the trained mini-Scout (routed experts and shared experts, as [out, in]) quantized to e4m3
   with one scale per row and with one scale per 128 × 128 block (and 32 × 32): the relative error of each.
2. The same with one weight made 1000× larger (a single outlier): a row scale confines the damage to one row, a
   block scale to its 128 × 128 block; the error of everything else is printed.
3. The experts of a copy of the model replaced by their dequantized e4m3 weights (weights only: activations stay
   float32, to isolate the scales' effect), row or block scales: the logits' relative error against the float
   model and the share of positions whose most likely token is unchanged, on validation windows.

    python solutions/extend/ch14_block_scales.py          # MINILLAMA4_PROFILE=ci: the ci-profile mini-Scout
"""

import torch

from minillama4 import Llama4, fp8
from minillama4.course import zoo
from minillama4.course.data import course_tokens
from minillama4.course.fp8_experiments import logit_agreement, rel_rms
from minillama4.fp8 import E4M3
from minillama4.train import get_batch

SCHEMES = {"row": ("row", 128), "block 128": ("block", 128), "block 32": ("block", 32)}


def roundtrip(w_NK: torch.Tensor, scheme: str) -> torch.Tensor:
    """ŵ = q · s for W [N, K] under one scheme of SCHEMES."""
    granularity, block = SCHEMES[scheme]
    return fp8.dequantize(*fp8.quantize(w_NK, E4M3, granularity, block=block))


def expert_weights(model: Llama4):
    """(name, parameter, expert index or None): every expert matrix; `as_out_in` shows it as [out, in]."""
    for i, layer in enumerate(model.layers):
        if not layer.is_moe:
            continue
        bank = layer.feed_forward.experts
        for e in range(bank.num_experts):  # the bank stores x @ W layouts: [D, 2F] and [F, D]
            yield f"layers.{i}.experts.{e}.gate_up", bank.gate_up_proj, e
            yield f"layers.{i}.experts.{e}.down", bank.down_proj, e
        shared = layer.feed_forward.shared_expert
        for n in ("gate_proj", "up_proj", "down_proj"):
            yield f"layers.{i}.shared.{n}", getattr(shared, n).weight, None


def as_out_in(param: torch.Tensor, e) -> torch.Tensor:
    """W [out, in]: an expert bank stores x @ W (index e, transposed); a shared expert's linear stores W."""
    return param[e].detach().t() if e is not None else param.detach()


def main() -> None:
    model, history = zoo.pretrained("mini-scout", verbose=False)
    print(f"mini-scout: {history.eval_steps[-1]} steps, validation loss {history.val_loss[-1]:.3f}")

    # 1. the error of each scheme on every expert weight
    errors = {s: [] for s in SCHEMES}
    for _, param, e in expert_weights(model):
        w = as_out_in(param, e)
        for s in SCHEMES:
            errors[s].append(rel_rms(roundtrip(w, s), w))
    print(f"\n1. relative error over {len(errors['row'])} expert matrices (mean / max):")
    for s, errs in errors.items():
        print(f"   e4m3 {s:10s} {sum(errs) / len(errs):.4f} / {max(errs):.4f}")

    # 2. one outlier weight, 1000× its row's largest
    name, param, e = next(expert_weights(model))
    w = as_out_in(param, e).clone()
    w[5, 7] = 1000 * w[5].abs().max()
    others = torch.ones_like(w, dtype=torch.bool)
    others[5, 7] = False
    row5 = torch.zeros_like(others)
    row5[5] = True
    print(f"\n2. {name} {list(w.shape)} with one weight 1000× its row's largest: error of the other weights")
    for s in SCHEMES:
        w_hat = roundtrip(w, s)
        print(f"   e4m3 {s:10s} all others {rel_rms(w_hat[others], w[others]):.4f}   "
              f"its row {rel_rms(w_hat[row5 & others], w[row5 & others]):.4f}   "
              f"outside its block of 128 rows {rel_rms(w_hat[128:], w[128:]):.4f}")

    # 3. the model with its experts rounded to e4m3 (weights only)
    val = course_tokens("val", vocab_size=model.config.vocab_size).ids
    g = torch.Generator().manual_seed(0)
    windows = [get_batch(val, 8, 128, g)[0] for _ in range(2)]
    print("\n3. experts rounded to e4m3 (activations float32): logits against the float model")
    for s in SCHEMES:
        q = Llama4(model.config)
        q.load_state_dict(model.state_dict())
        q.eval()
        with torch.no_grad():
            for _, param, e in expert_weights(q):
                w_hat = roundtrip(as_out_in(param, e), s)
                if e is None:
                    param.copy_(w_hat)
                else:
                    param[e].copy_(w_hat.t())
        a = logit_agreement(model, q, windows)
        print(f"   e4m3 {s:10s} logit error {a['logit_rel_rms']:.4f}   same top-1 token {a['top1_agreement']:.4f}")


if __name__ == "__main__":
    main()
