"""Chapter 09 cases: group advantages, the clipped objective, the k3 KL, the curriculum. Expected values come from the
package: `losses.grpo_advantages`, `losses.clipped_policy_loss`, `losses.kl_to_reference`, `train.rl.level_weights`."""

import torch

from ...losses import clipped_policy_loss, grpo_advantages, kl_to_reference
from ...train.rl import RLConfig, level_weights
from .core import Case, Exercise, register
from .core import seeded as _g


def _adv_cases():
    cases = []
    for seed, (P, G) in enumerate([(4, 8), (6, 4), (3, 2), (5, 16)]):
        r = (torch.rand(P, G, generator=_g(seed)) < 0.5).float()
        r[0] = 1.0  # an all-correct group
        r[-1] = 0.0  # an all-wrong group
        if seed == 3:
            r[1] = torch.rand(G, generator=_g(99))  # non-binary rewards too
            r[2] = 0.7  # all equal at a value other than 0 or 1
        cases.append(Case((r,), grpo_advantages(r)))
    return cases


def _clip_cases():
    cases = []
    for seed, (B, T, eps) in enumerate([(4, 6, 0.2), (3, 9, 0.1), (5, 4, 0.28)]):
        old = -torch.rand(B, T, generator=_g(10 + seed)) * 3
        new = old + torch.randn(B, T, generator=_g(20 + seed)) * 0.4  # ratios on both sides of the clip range
        adv = torch.randn(B, generator=_g(30 + seed))
        mask = torch.rand(B, T, generator=_g(40 + seed)) < 0.7
        mask[:, 0] = True
        cases.append(Case((new, old, adv, mask, eps), clipped_policy_loss(new, old, adv, mask, eps)))
    return cases


def _kl_cases():
    cases = []
    for seed, (B, T) in enumerate([(2, 5), (4, 3), (1, 8)]):
        lp = -torch.rand(B, T, generator=_g(50 + seed)) * 4
        ref = lp + torch.randn(B, T, generator=_g(60 + seed))
        cases.append(Case((lp, ref), kl_to_reference(lp, ref)))
    return cases


def _curriculum_cases():
    cases = []
    for steps, start, end in [(11, (0.4, 0.3, 0.3), (0.1, 0.3, 0.6)), (5, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
                              (1, (0.5, 0.5, 0.0), (0.0, 0.5, 0.5))]:
        cfg = RLConfig(steps=steps, start_weights=start, end_weights=end)
        for step in sorted({0, steps // 2, steps - 1}):
            cases.append(Case((step, steps, list(start), list(end)), [float(w) for w in level_weights(step, cfg)]))
    return cases


register(Exercise("group_advantages", 9, "group_advantages", _adv_cases,
                  "per row: (r − r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps), unbiased std; keep = some "
                  "reward differs from the row's first; set the advantages of the other rows to exactly 0"))
register(Exercise("clipped_policy_loss", 9, "clipped_policy_loss", _clip_cases,
                  "ρ = exp(new − old); take −min(ρ·a, clamp(ρ, 1 − ε, 1 + ε)·a) with a = adv[:, None], then sum over the "
                  "masked tokens and divide by the number of masked tokens of the whole batch"))
register(Exercise("k3_kl", 9, "k3_kl", _kl_cases,
                  "d = ref_logp − logp (reference minus policy), then exp(d) − d − 1 per token (no mean)"))
register(Exercise("curriculum_weights", 9, "curriculum_weights", _curriculum_cases,
                  "f = step / max(1, steps − 1); each weight is (1 − f)·start + f·end"))
