"""Chapter 07 cases: temperature softmax, forward KL, the distillation loss (values and where its gradient goes), the
warm-up / stable / decay schedule of the soft-target weight. Expected values come from the package
(`losses.distillation_loss`, `train.distill.alpha_at`) and from torch itself (`softmax`, `kl_div`)."""

from functools import partial

import torch
import torch.nn.functional as F

from ...losses import distillation_loss
from ...train.distill import DistillConfig, alpha_at
from .core import Case, Exercise, Mistake, register
from .core import seeded as _g


def _logits(seed: int, shape, scale: float) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(seed)) * scale


def _softmax_cases():
    cases = []
    for seed, (shape, scale, T, dtype) in enumerate([((4, 10), 2.0, 1.0, torch.float32),
                                                    ((3, 7, 16), 3.0, 2.0, torch.float32),
                                                    ((5, 12), 40.0, 0.5, torch.float32),  # huge logits: shift by max
                                                    ((6, 9), 4.0, 3.0, torch.bfloat16),  # divide in float32
                                                    ((4, 10), 3.0, 1.0, torch.float32)]):  # rows far apart
        z = _logits(300 + seed, shape, scale)
        if seed == 4:  # one max for the whole tensor would underflow some rows to all zeros: shift each row
            z += torch.tensor([0.0, 150.0, -150.0, 40.0])[:, None]
        z = z.to(dtype)
        cases.append(Case((z, T), (z.float() / T).softmax(-1)))
    return cases


def _kl_cases():
    cases = []
    for seed, (N, V, scale, T) in enumerate([(6, 10, 1.0, 1.0), (8, 32, 3.0, 2.0), (5, 20, 30.0, 0.5),
                                            (7, 11, 2.0, 5.0)]):
        v, z = _logits(400 + seed, (N, V), scale), _logits(450 + seed, (N, V), scale)
        if seed == 0:
            z[0] = v[0]  # one position where student = teacher: KL exactly 0
        want = F.kl_div((z / T).log_softmax(-1), (v / T).log_softmax(-1), log_target=True, reduction="none").sum(-1)
        cases.append(Case((v, z, T), want))
    return cases


def _kd_cases():
    cases = []
    for seed, (N, V, T, alpha, n_ignored) in enumerate([(10, 12, 2.0, 0.5, 3), (16, 30, 1.0, 0.9, 0),
                                                       (9, 8, 4.0, 0.25, 4), (12, 20, 0.7, 1.0, 2),
                                                       (7, 15, 3.0, 0.0, 1)]):
        z, v = _logits(500 + seed, (N, V), 2.0), _logits(550 + seed, (N, V), 2.0)
        y = torch.randint(0, V, (N,), generator=_g(600 + seed))
        y[torch.randperm(N, generator=_g(650 + seed))[:n_ignored]] = -100
        cases.append(Case((z, v, y, T, alpha), _kd_probe(distillation_loss, z, v, y, T, alpha)))
    return cases


def _kd_probe(fn, student, teacher, labels, T, alpha):
    """The loss, its gradient w.r.t. the student's logits, and whether the teacher's logits received a gradient."""
    z, v = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    loss = fn(z, v, labels, T, alpha)
    if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
        return loss, "no gradient", None
    loss.backward()
    return loss.detach(), z.grad, bool(v.grad is not None and v.grad.abs().max() > 0)


def _wsd_cases():
    cases = []
    for steps, lo, hi, wu, dec, at in [(100, 0.1, 0.9, 0.05, 0.3, (0, 2, 5, 6, 50, 69, 70, 71, 90, 99)),
                                       (10, 0.0, 1.0, 0.0, 0.5, (0, 3, 4, 5, 9)),
                                       (7, 0.2, 0.8, 0.5, 0.0, (0, 1, 3, 6)),
                                       (1, 0.3, 0.7, 0.1, 0.2, (0,)),
                                       (41, 0.5, 1.0, 0.2, 0.8, (0, 5, 8, 9, 20, 40))]:
        kd = DistillConfig(schedule="wsd", alpha_min=lo, alpha_max=hi, warmup_frac=wu, decay_frac=dec)
        for step in at:
            cases.append(Case((step, steps, lo, hi, wu, dec), float(alpha_at(step, steps, kd))))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch07.py holds independently written wrong learner files for each of them.
def _non_finite(case, got) -> bool:
    g = got[0] if isinstance(got, tuple) else got
    return bool((~torch.isfinite(g)).any())


def _softmax_other_dim(case, got) -> bool:
    """The rows over the last dim do not sum to 1, but the sums over another dim do."""
    ones = lambda t: torch.allclose(t, torch.ones_like(t), atol=1e-4)
    return not ones(got.sum(-1)) and any(ones(got.sum(d)) for d in range(got.dim() - 1))


def _in_bfloat16_then_float(case, got) -> bool:
    return case.args[0].dtype == torch.bfloat16 and got.dtype == torch.float32 and torch.equal(
        got, got.bfloat16().float())


def _softmax_T_times(z, T):
    return (z.float() * T).softmax(-1)


def _softmax_T_after(z, T):
    return z.float().softmax(-1) / T


def _softmax_divided_in_bf16(z, T):
    return (z / T).float().softmax(-1)


def _kl(v, z, T, reverse=False, use_T=True, T2=False, mean=False):
    t = T if use_T else 1.0
    logp, logq = (v.float() / t).log_softmax(-1), (z.float() / t).log_softmax(-1)
    if reverse:
        logp, logq = logq, logp
    per_v = logp.exp() * (logp - logq)
    kl = per_v.mean(-1) if mean else per_v.sum(-1)
    return kl * T * T if T2 else kl


def _kd(z, v, y, T, alpha, T2=True, rows="kept", ce_at_T=False, reverse=False, swap_alpha=False):
    """The distillation loss with one thing changed. rows: "kept" (right), "all rows in the mean" (masked rows
    count as 0 but the mean divides by N), "kl on all rows" (only the CE ignores -100)."""
    keep = y != -100
    kl = _kl(v.detach(), z, T, reverse=reverse)
    ce = F.cross_entropy(z.float() / (T if ce_at_T else 1.0), y, reduction="none")  # 0 where y = -100
    a = 1 - alpha if swap_alpha else alpha
    soft = a * (T * T if T2 else 1.0) * kl
    if rows == "kl on all rows":
        return soft.mean() + (1 - a) * ce[keep].mean()
    per = torch.where(keep, soft + (1 - a) * ce, 0.0)
    return per.sum() / (len(y) if rows == "all rows in the mean" else keep.sum())


def _wsd(step, steps, lo, hi, wu, dec, progress="0-based", start=None, end=None):
    s = {"0-based": step / max(1, steps - 1), "over steps": step / steps,
         "1-based": (step + 1) / steps}[progress]
    start = lo if start is None else start
    end = lo if end is None else end
    if s < wu:
        return start + (hi - start) * s / wu
    if s > 1 - dec:
        return hi + (end - hi) * (s - (1 - dec)) / dec
    return hi


_ZERO_BASED = "step is 0-based: the progress s = step / (steps − 1) runs from 0 at the first step to 1 at the last"

register(Exercise(
    "softmax_with_temperature", 7, "softmax_with_temperature", _softmax_cases,
    "z = logits.float() / T; subtract the row max; exp; divide by the row sum (over the last dim)",
    nudge="Where does T go, before or after exp? What happens to exp(z) when z is 200, and which shift leaves the "
          "softmax of each row unchanged?",
    mistakes=[
        Mistake("your softmax gave NaN or inf: exp overflowed or a whole row underflowed; subtract each ROW's max "
                "(over the last dim, keepdim=True) before exp", test=_non_finite),
        Mistake("the softmax must run over the last dim (the vocabulary, dim=-1), for any number of leading dims",
                test=_softmax_other_dim),
        Mistake("the result is bfloat16: convert the logits with .float() first and return float32",
                test=lambda case, got: got.dtype == torch.bfloat16),
        Mistake("you divided by T in bfloat16: convert first, logits.float() / T (bfloat16 keeps 8 bits of "
                "mantissa)", wrong=_softmax_divided_in_bf16),
        Mistake("you computed in bfloat16 and converted the result: convert the logits with .float() first",
                test=_in_bfloat16_then_float),
        Mistake("you multiplied by the temperature: divide, softmax(z / T) (T > 1 must flatten)",
                wrong=_softmax_T_times),
        Mistake("the temperature divides the LOGITS, before the softmax: softmax(z / T), not softmax(z) / T",
                wrong=_softmax_T_after),
    ]))
register(Exercise(
    "forward_kl", 7, "forward_kl", _kl_cases,
    "log p = log_softmax(teacher / T), log q = log_softmax(student / T); "
    "KL = (p · (log p − log q)).sum(-1) with p = log p .exp() — the teacher is p, not the student",
    nudge="Under whose distribution is the expectation taken in the forward KL? And what does log(softmax(·)) "
          "give for a probability that rounded to 0?",
    mistakes=[
        Mistake("your KL has NaN or inf: log(softmax(·)) is −inf where a probability underflows to 0; use "
                "log_softmax for both logs", test=_non_finite),
        Mistake("return one KL per position, [N]: sum over the vocabulary only (kl_div's reduction='none', then "
                ".sum(-1))", test=lambda case, got: got.dim() == 0),
        Mistake("that is the reverse KL(student ‖ teacher): the forward KL weighs by the TEACHER, "
                "Σ p (log p − log q) with p = softmax(teacher / T)", wrong=partial(_kl, reverse=True)),
        Mistake("the temperature is missing: both distributions are softmax(logits / T)",
                wrong=partial(_kl, use_T=False)),
        Mistake("T² belongs in the distillation loss, not in the KL itself", wrong=partial(_kl, T2=True)),
        Mistake("you averaged over the vocabulary: the KL is a SUM over v", wrong=partial(_kl, mean=True)),
    ]))
register(Exercise(
    "kd_loss", 7, "kd_loss", _kd_cases,
    "keep = labels != -100; on the kept rows: α · T² · KL(p_T ‖ q_T) + (1 − α) · CE at temperature 1; "
    "mean over kept rows only; teacher.detach()",
    nudge="Three details: what rescales the soft term whatever T is, which temperature the hard term uses, and "
          "which positions count in the mean (and in its denominator)?",
    probe=_kd_probe, mistakes=[
        Mistake("the loss has no gradient: build it from the student's logits with torch operations",
                test=lambda case, got: isinstance(got[1], str)),
        Mistake("the student's logits got no gradient: detach the TEACHER, not the student (the student is what "
                "learns)", test=lambda case, got: got[1] is None),
        Mistake("the teacher's logits received a gradient: detach the teacher (it is not trained)",
                test=lambda case, got: got[2] is True),
        Mistake("labels -100 are not token ids: drop those positions (labels != -100) before gather / "
                "cross-entropy", raises=r"out of bounds|Class values must be non-negative|Target -100"),
        Mistake("the soft term needs the factor T²: without it its gradient shrinks like 1/T²",
                wrong=partial(_kd, T2=False)),
        Mistake("the -100 positions counted in the mean: average over the kept positions only (divide by their "
                "number, not by N)", wrong=partial(_kd, rows="all rows in the mean")),
        Mistake("the KL term included the -100 positions: mask both terms, then average over the kept positions",
                wrong=partial(_kd, rows="kl on all rows")),
        Mistake("the hard term uses the student at temperature 1: CE(student_logits, labels), not CE(student / T)",
                wrong=partial(_kd, ce_at_T=True)),
        Mistake("that is the reverse KL(student ‖ teacher): the soft term is KL(teacher ‖ student), weighted by "
                "the teacher's p", wrong=partial(_kd, reverse=True)),
        Mistake("alpha weighs the SOFT term (the KL) and 1 − alpha the hard one: yours are swapped",
                wrong=partial(_kd, swap_alpha=True)),
    ]))
register(Exercise(
    "wsd_alpha", 7, "wsd_alpha", _wsd_cases,
    "s = step / max(1, steps − 1); warm-up while s < warmup_frac, decay once s > 1 − decay_frac, "
    "α_max in between; both ramps are linear between α_min and α_max",
    nudge="What is the progress s at the first step and at the last one? Which value does each ramp start from "
          "and end at?",
    mistakes=[
        Mistake("a division by zero: with steps == 1 use s = step / max(1, steps − 1), and a phase of length 0 "
                "(warmup_frac or decay_frac 0) has no ramp to compute", raises=r"ZeroDivisionError"),
        Mistake(_ZERO_BASED + " (step / steps never reaches 1)", wrong=partial(_wsd, progress="over steps")),
        Mistake(_ZERO_BASED + " (no + 1)", wrong=partial(_wsd, progress="1-based")),
        Mistake("the warm-up starts from α_min, not 0", wrong=partial(_wsd, start=0.0)),
        Mistake("the decay ends at α_min, not 0", wrong=partial(_wsd, end=0.0)),
    ]))
