"""Extend it, chapter 12: place the experts on the ranks by their load instead of in contiguous blocks.

Under expert parallelism a MoE layer waits for its busiest rank, so its slowdown over a perfect split is
max / mean of the rows each rank receives. The package puts experts r·e … r·e + e - 1 on rank r. Any placement with
e = E / N experts per rank is as valid (each rank holds e whole experts); the best one for a given load is the
partition of the experts into N groups of e whose largest group sum is smallest.

For each trained toy (mini-Scout: 4 experts, mini-Behemoth: 8, both top-1), it counts the rows each expert receives
in every MoE layer on held-out text of the course corpus, then searches all balanced placements (few enough to try
every one) for 2 and 4 ranks and prints max / mean for the contiguous blocks and for the best placement. The best
placement is fitted on the same tokens it is scored on, so it is a bound on what a placement can gain, not a
prediction; load balancers such as vLLM's EPLB place experts from loads recorded earlier, and also copy popular
experts, which placement alone cannot do (with one expert per rank, every placement is the same).

    python solutions/extend/ch12_expert_placement.py          # MINILLAMA4_PROFILE=ci for a short run
"""

from itertools import combinations

import torch

from minillama4.course import zoo
from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile


def rows_per_expert(name: str, batch: int, seq: int) -> torch.Tensor:
    """[L, E] rows each expert of each MoE layer receives on `batch` × `seq` held-out tokens."""
    model, _ = zoo.pretrained(name, verbose=False)
    val = course_tokens("val", vocab_size=model.config.vocab_size).ids
    with torch.no_grad():
        _, routing = model(val[: batch * seq].view(batch, seq), return_routing=True)
    E = model.config.num_local_experts
    return torch.stack([torch.bincount(r.indices.reshape(-1), minlength=E) for r in routing])


def placements(experts: tuple[int, ...], per_rank: int):
    """Every split of `experts` into groups of `per_rank` (the order of the groups does not matter)."""
    if not experts:
        yield []
        return
    first, rest = experts[0], experts[1:]
    for others in combinations(rest, per_rank - 1):  # the group of the first expert fixes the order of the groups
        left = tuple(x for x in rest if x not in others)
        for tail in placements(left, per_rank):
            yield [(first, *others), *tail]


def imbalance(rows_E: torch.Tensor, groups) -> float:
    """max / mean of the rows per rank when rank r holds the experts groups[r]."""
    per_rank = torch.stack([rows_E[list(g)].sum() for g in groups]).float()
    return (per_rank.max() / per_rank.mean()).item()


def main() -> None:
    batch, seq = by_profile(ci=8, laptop=32), 128
    print(f"rows per rank, max / mean over the ranks, on {batch * seq} held-out tokens: contiguous blocks → best "
          "placement (fitted on the same tokens)")
    for name in ("mini-scout", "mini-behemoth"):
        rows_LE = rows_per_expert(name, batch, seq)
        L, E = rows_LE.shape
        for N in (2, 4):
            e = E // N
            blocks = [tuple(range(r * e, (r + 1) * e)) for r in range(N)]
            contiguous, best = [], []
            for rows_E in rows_LE:
                contiguous.append(imbalance(rows_E, blocks))
                best.append(min(imbalance(rows_E, g) for g in placements(tuple(range(E)), e)))
            assert all(b <= c + 1e-9 for b, c in zip(best, contiguous))  # the blocks are one of the placements
            print(f"  {name:13s} {N} ranks × {e} experts: " + ", ".join(
                f"layer {i} {c:.2f} → {b:.2f}" for i, (c, b) in enumerate(zip(contiguous, best))) +
                f"; worst layer {max(contiguous):.2f} → {max(best):.2f}")


if __name__ == "__main__":
    main()
