"""Chapter 07 cases: temperature softmax, forward KL, the distillation loss (values and where its gradient goes), the
warm-up / stable / decay schedule of the soft-target weight. Expected values come from the package
(`losses.distillation_loss`, `train.distill.alpha_at`) and from torch itself (`softmax`, `kl_div`)."""

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
                                                    ((6, 9), 4.0, 4.0, torch.bfloat16)]):
        z = _logits(300 + seed, shape, scale).to(dtype)
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


register(Exercise("softmax_with_temperature", 7, "softmax_with_temperature", _softmax_cases,
                  "z = logits.float() / T; subtract the row max; exp; divide by the row sum (over the last dim)"))
register(Exercise("forward_kl", 7, "forward_kl", _kl_cases,
                  "log p = log_softmax(teacher / T), log q = log_softmax(student / T); "
                  "KL = (p · (log p − log q)).sum(-1) with p = log p .exp() — the teacher is p, not the student"))
register(Exercise("kd_loss", 7, "kd_loss", _kd_cases,
                  "keep = labels != -100; on the kept rows: α · T² · KL(p_T ‖ q_T) + (1 − α) · CE at temperature 1; "
                  "mean over kept rows only; teacher.detach()", probe=_kd_probe, mistakes=[
                      Mistake("the loss has no gradient: build it from the student's logits with torch operations",
                              test=lambda case, got: isinstance(got[1], str)),
                      Mistake("the teacher's logits received a gradient: detach the teacher (it is not trained)",
                              test=lambda case, got: got[2] is True)]))
register(Exercise("wsd_alpha", 7, "wsd_alpha", _wsd_cases,
                  "s = step / max(1, steps − 1); warm-up while s < warmup_frac, decay once s > 1 − decay_frac, "
                  "α_max in between; both ramps are linear between α_min and α_max"))
