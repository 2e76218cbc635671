"""Chapter 09 cases: group advantages, the clipped objective, the k3 KL, the curriculum. Expected values come from the
package: `losses.grpo_advantages`, `losses.clipped_policy_loss`, `losses.kl_to_reference`, `train.rl.level_weights`."""

import torch

from ...losses import clipped_policy_loss, grpo_advantages, kl_to_reference
from ...train.rl import RLConfig, level_weights
from .core import Case, Exercise, Mistake, register
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
    # bfloat16 log-probs of a policy still close to its reference (the usual situation): exp(d) − d − 1 ≈ d²/2 is
    # a small difference of numbers near 1, all rounding unless it is computed in float32
    lp = (-torch.rand(3, 6, generator=_g(70)) * 4).to(torch.bfloat16)
    ref = (lp.float() + torch.randn(3, 6, generator=_g(71)) * 0.05).to(torch.bfloat16)
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


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch09.py holds independently written wrong learner files for each of them.
def _advantages(mean_dim=-1, std=True, correction=1, eps=1e-4):
    """Group advantages with one thing changed: the dimension of the statistics (-1 per group, 0 per column,
    None the whole batch), no std, the std's correction, or the eps. All-equal groups still get exactly 0."""
    def wrong(rewards_PG, eps_=1e-4):
        r = rewards_PG.float()
        dims = dict(dim=mean_dim, keepdim=True) if mean_dim is not None else {}
        a = r - r.mean(**dims)
        if std:
            a = a / (r.std(**dims, correction=correction) + eps)
        keep = (r != r[:, :1]).any(-1)
        return torch.where(keep[:, None], a, torch.zeros_like(a)), keep
    return wrong


def _pair(got) -> bool:
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)


def _adv_nan(case, got) -> bool:
    return _pair(got) and got[0].is_floating_point() and bool(got[0].isnan().any())


def _keep_not_per_group(case, got) -> bool:
    return _pair(got) and tuple(got[1].shape) == tuple(case.args[0].shape)


def _keep_inverted(case, got) -> bool:
    return _pair(got) and torch.equal(got[1].bool(), ~case.expected[1])


def _keeps_equal_group(case, got) -> bool:
    """keep is right except on all-equal groups whose reward is neither 0 nor 1 (a test on the sum of 0/1 rewards,
    or a std computed in float32 that is not exactly 0, misses them)."""
    r, keep = case.args[0].float(), case.expected[1]
    odd = ~keep & (r[:, 0] != 0) & (r[:, 0] != 1)
    return _pair(got) and bool(odd.any()) and torch.equal(got[1].bool(), keep | odd)


def _not_zeroed(case, got) -> bool:
    """keep is right and the advantages too, except on the dropped groups, which are not exactly 0."""
    adv, keep = case.expected
    if not _pair(got) or not torch.equal(got[1].bool(), keep) or got[0].shape != adv.shape:
        return False
    return bool(torch.isclose(got[0][keep], adv[keep], atol=1e-5, rtol=1e-4).all()
                and (got[0][~keep] != 0).any())


def _surrogate(ratio_fn, combine=torch.minimum, sign=-1.0, reduce="tokens"):
    """The clipped loss with one thing changed: how the ratio is formed, how the clipped and unclipped terms are
    combined, the sign, or how the masked tokens are averaged."""
    def wrong(new, old, adv, mask, clip_eps=0.2):
        a = adv.float()[:, None]
        ratio = ratio_fn(new.float(), old.float())
        per_token = sign * combine(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
        m = mask.float()
        if reduce == "sequences":
            return ((per_token * m).sum(-1) / m.sum(-1)).mean()
        if reduce == "all positions":
            return (per_token * m).sum() / m.numel()
        if reduce == "no mask":
            return per_token.mean()
        return (per_token * m).sum() / m.sum()
    return wrong


def _exp_ratio(new, old):
    return torch.exp(new - old)


def _unclipped_only(unclipped, clipped):
    return unclipped


def _clipped_only(unclipped, clipped):
    return clipped


def _k3_reversed(logp, ref):
    d = logp.float() - ref.float()
    return torch.exp(d) - d - 1


def _k2(logp, ref):
    return 0.5 * (logp.float() - ref.float()) ** 2


def _k3_no_minus_one(logp, ref):
    d = ref.float() - logp.float()
    return torch.exp(d) - d


def _log_ratio(case, got) -> bool:
    """The plain log-ratio (k1), in either direction."""
    lp, ref = (t.float() for t in case.args)
    return isinstance(got, torch.Tensor) and got.shape == lp.shape and any(
        torch.allclose(got.float(), d, atol=1e-5, rtol=1e-4) for d in (lp - ref, ref - lp))


def _not_float32(case, got) -> bool:
    """Every float32 case passed; the bfloat16 one does not: computed in the inputs' dtype."""
    return case.args[0].dtype == torch.bfloat16


def _curriculum(fraction, swapped=False):
    def wrong(step, steps, start, end):
        f = fraction(step, steps)
        a, b = (end, start) if swapped else (start, end)
        return [(1 - f) * x + f * y for x, y in zip(a, b)]
    return wrong


def _some_other_fraction(case, got) -> bool:
    """A linear interpolation between start and end, at another fraction than step / max(1, steps − 1)."""
    step, steps, start, end = case.args
    i = max(range(len(start)), key=lambda j: abs(end[j] - start[j]))
    if not isinstance(got, list) or len(got) != len(start) or end[i] == start[i]:
        return False
    f = (got[i] - start[i]) / (end[i] - start[i])
    return all(abs(w - ((1 - f) * a + f * b)) < 1e-6 for w, a, b in zip(got, start, end))


register(Exercise(
    "group_advantages", 9, "group_advantages", _adv_cases,
    "per row: (r − r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps), unbiased std; keep = some "
    "reward differs from the row's first; set the advantages of the other rows to exactly 0",
    nudge="Each row is one prompt's group: its mean is the baseline and its spread the scale. Which dimension do "
          "the statistics run over, which std does torch compute by default, and what happens in a row where every "
          "reward is the same?",
    mistakes=[
        Mistake("your advantages contain NaN: an all-equal group has std 0; add eps to the std and set those groups "
                "to 0 with torch.where (NaN · 0 is still NaN)", test=_adv_nan),
        Mistake("keep is one bool per group (prompt), [P]: some reward of the row differs from the others "
                "(.any(-1))", test=_keep_not_per_group),
        Mistake("your keep mask is inverted: keep is True for the groups whose rewards DIFFER (they carry a "
                "signal), False for all-equal groups", test=_keep_inverted),
        Mistake("you normalised over the whole batch: the mean and std are taken per group (each row, dim -1), so "
                "a reply is compared with its own siblings", wrong=_advantages(mean_dim=None)),
        Mistake("you normalised over dim 0 (across prompts): each row is a group, take the mean and std over its "
                "G samples (dim -1)", wrong=_advantages(mean_dim=0)),
        Mistake("you only subtracted the mean: divide by the group's std (+ eps) as well",
                wrong=_advantages(std=False)),
        Mistake("that is the biased std (divides by G): GRPO uses torch's default, the unbiased std (divides by "
                "G − 1)", wrong=_advantages(correction=0)),
        Mistake("you left out eps: divide by (std + eps), eps = 1e-4 as given", wrong=_advantages(eps=0.0)),
        Mistake("your keep mask keeps a group whose rewards are all equal (all 0.7): drop every all-equal group, "
                "whatever the value, by comparing the rewards themselves, (r != r[:, :1]).any(-1); a sum strictly "
                "between 0 and G only works for 0/1 rewards, and a float std need not be exactly 0",
                test=_keeps_equal_group),
        Mistake("the advantages of all-equal groups must be exactly 0: r − mean is not exactly 0 in float32, and "
                "dividing by eps blows it up; set them to 0 with torch.where(keep[:, None], adv, 0)",
                test=_not_zeroed),
    ]))
register(Exercise(
    "clipped_policy_loss", 9, "clipped_policy_loss", _clip_cases,
    "ρ = exp(new − old); take −min(ρ·a, clamp(ρ, 1 − ε, 1 + ε)·a) with a = adv[:, None], then sum over the "
    "masked tokens and divide by the number of masked tokens of the whole batch",
    nudge="The inputs are LOG-probabilities: how do you get the probability ratio from them? Then, of the clipped "
          "and the unclipped term, which one does PPO keep, and what is the loss averaged over?",
    mistakes=[
        Mistake("adv_B has one value per completion (row): broadcast it over the tokens as adv[:, None]",
                raises=r"must match the size of tensor b"),
        Mistake("the inputs are log-probabilities: the ratio π_new/π_old is exp(logp_new − logp_old), not "
                "logp_new / logp_old", wrong=_surrogate(lambda new, old: new / old)),
        Mistake("logp_new − logp_old is the LOG of the ratio: ρ = exp(logp_new − logp_old)",
                wrong=_surrogate(lambda new, old: new - old)),
        Mistake("your ratio is upside down: ρ = π_new/π_old = exp(logp_new − logp_old)",
                wrong=_surrogate(lambda new, old: torch.exp(old - new))),
        Mistake("you took the max of the two terms: PPO's surrogate is the MIN (the pessimistic one) of ρ·a and "
                "clip(ρ)·a", wrong=_surrogate(_exp_ratio, torch.maximum)),
        Mistake("the sign is flipped: the loss is −min(ρ·a, clip(ρ)·a), so that minimising it raises the "
                "objective", wrong=_surrogate(_exp_ratio, sign=1.0)),
        Mistake("there is no clipping: take −min(ρ·a, clip(ρ, 1 − ε, 1 + ε)·a)",
                wrong=_surrogate(_exp_ratio, _unclipped_only)),
        Mistake("you kept only the clipped term: PPO takes the min of the unclipped and the clipped one",
                wrong=_surrogate(_exp_ratio, _clipped_only)),
        Mistake("you averaged each sequence, then the sequences: the mean is over all masked tokens of the batch "
                "(a token mean)", wrong=_surrogate(_exp_ratio, reduce="sequences")),
        Mistake("you divided by every position, masked-out ones included: divide by the number of tokens where "
                "mask is True", wrong=_surrogate(_exp_ratio, reduce="all positions")),
        Mistake("the mask was ignored: only the completion tokens (mask True) count, in the sum and in the count",
                wrong=_surrogate(_exp_ratio, reduce="no mask")),
    ]))
register(Exercise(
    "k3_kl", 9, "k3_kl", _kl_cases,
    "d = ref_logp − logp (reference minus policy), then exp(d) − d − 1 per token (no mean), in float32",
    nudge="k3 = exp(d) − d − 1 with one particular difference d of the two log-probs: which one is subtracted from "
          "which? And is the result one number or one per token?",
    mistakes=[
        Mistake("return one value per token, [B, T]: the caller averages it over the completion tokens",
                test=lambda case, got: isinstance(got, torch.Tensor) and got.dim() == 0),
        Mistake("the difference goes the other way: d = ref_logp − logp (reference minus policy), then "
                "exp(d) − d − 1", wrong=_k3_reversed),
        Mistake("that is the plain log-ratio (k1), which can be negative: k3 = exp(d) − d − 1 with "
                "d = ref_logp − logp", test=_log_ratio),
        Mistake("that is ½·(log-ratio)² (k2): k3 = exp(d) − d − 1 with d = ref_logp − logp", wrong=_k2),
        Mistake("you forgot the − 1: k3 = exp(d) − d − 1, which is 0 when the policy equals the reference",
                wrong=_k3_no_minus_one),
        Mistake("compute in float32 (.float() first): near the reference exp(d) − d − 1 ≈ d²/2 is a tiny "
                "difference of numbers close to 1, and bfloat16 rounds it away", test=_not_float32),
    ]))
register(Exercise(
    "curriculum_weights", 9, "curriculum_weights", _curriculum_cases,
    "f = step / max(1, steps − 1); each weight is (1 − f)·start + f·end",
    nudge="Steps are counted from 0 to steps − 1: which fraction f is 0 at the first step and exactly 1 at the "
          "last? What if there is only one step?",
    mistakes=[
        Mistake("with steps = 1 you divide by steps − 1 = 0: use max(1, steps − 1)", raises=r"ZeroDivisionError"),
        Mistake("return a plain list of floats (.tolist()), not a tensor",
                test=lambda case, got: isinstance(got, torch.Tensor)),
        Mistake("f = step / steps never reaches 1: the last step is steps − 1, so f = step / max(1, steps − 1)",
                wrong=_curriculum(lambda step, steps: step / steps)),
        Mistake("start and end are swapped: at step 0 the weights are `start`, at the last step `end`",
                wrong=_curriculum(lambda step, steps: step / max(1, steps - 1), swapped=True)),
        Mistake("// is integer division: f stays 0 until the last step; use / (true division)",
                wrong=_curriculum(lambda step, steps: step // max(1, steps - 1))),
        Mistake("your weights interpolate at another fraction: f = step / max(1, steps − 1) is 0 at step 0 and 1 at "
                "the last step", test=_some_other_fraction),
    ]))
