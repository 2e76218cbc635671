# GENERATED from solutions/ch07_distillation.py by scripts/make_exercises.py (stub f7f8565e062b): this is your file, fill in the stubs.
"""Chapter 07 exercises: soft targets at a temperature, the forward KL, the distillation loss, and its schedule.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 7`. Shapes: N positions, V vocabulary.
Labels use -100 for "does not count".
"""

import torch


def softmax_with_temperature(logits_NV: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft targets: p = softmax(z / T) over the last dimension, computed in float32 (so that bfloat16 logits give
    float32 probabilities). T > 1 flattens the distribution, T < 1 sharpens it, T = 1 is the plain softmax.
    Returns [..., V] float32, each row summing to 1."""
    # YOUR CODE HERE
    raise NotImplementedError()


def forward_kl(teacher_logits_NV: torch.Tensor, student_logits_NV: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per position, KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) with the teacher's p = softmax(v/T) and the student's
    q = softmax(z/T) ("forward" KL: the expectation is under the teacher). Use log_softmax for the logs: log of a
    softmax that underflowed to 0 would give -inf. Returns [N] float32 (≥ 0, 0 where the two agree)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def kd_loss(student_logits_NV: torch.Tensor, teacher_logits_NV: torch.Tensor, labels_N: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """The distillation loss, a float32 scalar:

        mean over the positions whose label is not -100 of
            alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · CE(softmax(student), label)

    Note the cross-entropy uses the student at temperature 1 (the hard targets are the data, not softened), and the
    positions labelled -100 count in neither term nor in the mean's denominator. The teacher must get no gradient
    (detach it). Same numbers as `minillama4.losses.distillation_loss` for logits [N, V] and labels [N]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def wsd_alpha(step: int, steps: int, alpha_min: float, alpha_max: float, warmup_frac: float,
              decay_frac: float) -> float:
    """The weight of the soft targets at `step` (0-based) of a run of `steps` steps, warm-up / stable / decay:

        s = step / (steps − 1)          training progress, 0 … 1 (s = 0 if steps == 1)
        s < warmup_frac:                alpha_min + (alpha_max − alpha_min) · s / warmup_frac
        s > 1 − decay_frac:             alpha_max → alpha_min linearly, reaching alpha_min at s = 1
        otherwise:                      alpha_max

    Same numbers as `minillama4.train.distill.alpha_at` with schedule="wsd". Returns a Python float."""
    # YOUR CODE HERE
    raise NotImplementedError()
