"""Extend it, chapter 09: how big a group? The share of groups with zero advantage against the group size G.

A prompt the policy answers right with probability p gives a group of G replies whose rewards are all equal (all
right or all wrong: zero advantage, dropped) with probability

    P(drop | p, G) = p^G + (1 − p)^G.

The SFT model of chapter 08 (cached, `posttrain.stage("sft")`) samples N replies to each of a set of training
prompts at the RL temperature. Each prompt's pass rate p̂ is estimated from its N replies; the replies are then cut
into N / G disjoint groups of G, and the share of all-equal groups is counted next to the prediction
mean over prompts of p̂^G + (1 − p̂)^G. Bigger groups are dropped less often but cost G samples each: the last column
counts the informative groups per 100 sampled replies.

    python solutions/extend/ch09_group_size.py             # MINILLAMA4_PROFILE=ci for a short run
"""

import torch

from minillama4.course.data import course_tokenizer
from minillama4.course.profile import by_profile
from minillama4.course.tasks import sample_tasks
from minillama4.train import posttrain, seed_everything
from minillama4.train.rollout import rollouts

GROUP_SIZES = (2, 4, 8, 16)
SAMPLES = 32  # replies per prompt (a multiple of every G)


def main() -> None:
    seed_everything(0)
    n_prompts = by_profile(ci=32, laptop=96)
    tok = course_tokenizer()
    model, _ = posttrain.stage("sft", progress=False)
    cfg = posttrain.recipe().rl
    prompts = sample_tasks(n_prompts, seed=9, weights=cfg.end_weights, kinds=cfg.kinds)  # the late curriculum's mix
    groups = rollouts(model, tok, prompts, n=SAMPLES, temperature=cfg.temperature,
                      generator=torch.Generator().manual_seed(0))
    rewards_PN = torch.tensor([[r.reward for r in g] for g in groups])  # [prompts, SAMPLES]
    p_P = rewards_PN.mean(-1)  # p̂ per prompt
    print(f"{n_prompts} prompts × {SAMPLES} replies from the SFT model; mean pass rate {p_P.mean():.3f}, "
          f"prompts always right {(p_P == 1).float().mean():.0%}, never right {(p_P == 0).float().mean():.0%}")
    print(f"{'G':>3} {'dropped (measured)':>19} {'predicted':>10} {'informative groups / 100 replies':>33}")
    for G in GROUP_SIZES:
        r_PkG = rewards_PN.view(n_prompts, SAMPLES // G, G)  # disjoint groups of G
        same = (r_PkG == r_PkG[..., :1]).all(-1).float().mean().item()  # all rewards equal: zero advantage
        predicted = (p_P ** G + (1 - p_P) ** G).mean().item()
        print(f"{G:3d} {same:19.3f} {predicted:10.3f} {100 * (1 - same) / G:33.1f}")


if __name__ == "__main__":
    main()
