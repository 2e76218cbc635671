"""Distillation: a student learns from a teacher's soft targets and from the data's hard labels.

Per position with label y, student logits z and teacher logits v (losses.distillation_loss):

    L(t) = α(t) · T² · KL(softmax(v/T) ‖ softmax(z/T))  +  (1 − α(t)) · CE(softmax(z), y)   (+ the MoE balance loss)

Llama 4 says it "developed a novel distillation loss function that dynamically weights the soft and hard targets
through training" and codistilled Maverick from Behemoth, but has published neither the weighting nor its schedule.
This module is the course's reading of it, not Meta's recipe:

* The schedule α(t) (`alpha_at`) is warm-up / stable / decay on the soft-target weight, the shape Peng et al.
  (arXiv 2410.16215) found best for the proportion of the KD loss in pre-training distillation. Why each phase:
  - stable at a high α: a teacher that is far better than the student gives it a whole distribution per token
    instead of one token; this is where distillation buys its sample efficiency;
  - decay towards α_min at the end: once the student approaches the teacher, the teacher's mistakes become the
    student's ceiling; the hard labels take over so that the last (low learning rate) steps fit the data itself;
  - a short warm-up: the very first steps of a randomly initialised student mostly learn token frequencies, which the
    hard labels teach as well; starting at α_min avoids large early KL gradients (the KL of a random student is big)
    competing with the learning-rate warm-up. With `warmup_frac=0` the schedule is "high, then decay".
  `constant`, `linear` (α_max → α_min) and `ramp_up` (hard first, soft later: the curriculum Cameron Wolfe suggests
  for Llama 4, and Anil et al.'s burn-in for codistillation from scratch) are there to compare against.
  Measured on the toy (ci-sized student run: 150 steps × 8 × 64 tokens, a 200-step mini-Behemoth teacher at 2.21
  validation nats, one seed; final student validation loss): hard labels only 3.17; constant α = 0.5 3.11, 0.9 2.94,
  1.0 2.99; wsd 0.1 → 0.9 → 0.1 2.97; linear 1 → 0 3.12; ramp_up 0 → 1 3.06. So: a high soft weight for most of the
  run is what matters; the final decay costs ~0.03 nats here (one seed, so within plausible noise), a price we pay
  for a student that ends on the data rather than on its teacher. Temperature mattered more: with a trained
  mini-Scout as the teacher, T = 2 (constant 0.9 / wsd) was *worse* than hard labels alone (3.38 / 3.23 vs 3.17)
  while T = 1 won (2.99), so the default is T = 1 (a student this early in training gains little from the teacher's
  flattened tail).
* Codistillation (`codistill=True`): the teacher keeps training on the same batches while the student learns from it.
  The teacher's forward pass for its own update is the student's target (detached), so the soft targets cost no extra
  forward pass: the amortisation the Llama 4 blog describes. The student always sees the teacher of this very step.

The student's hard-label baseline runs through the same loop with `teacher=None`: same init, same batches (one seeded
generator), same optimizer, same balance loss; only the targets differ. It is bit-for-bit `pretrain.train`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..losses import distillation_loss
from ..model import Llama4
from ..course.profile import by_profile
from .pretrain import (History, TrainConfig, evaluate, get_batch, lr_at, make_optimizer, optimizer_step,
                       router_aux_loss)

SCHEDULES = ("constant", "linear", "wsd", "ramp_up")


@dataclass
class DistillConfig:
    temperature: float = 1.0  # T: softens both distributions (T > 1); T² rescales the soft gradient back to O(1)
    alpha_max: float = 0.9  # weight of the soft targets at the peak of the schedule (1 = soft targets only)
    alpha_min: float = 0.1  # weight of the soft targets at the start (warm-up) and end (decay) of the schedule
    schedule: str = "wsd"  # how α moves over training: constant (= alpha_max) | linear | wsd | ramp_up
    warmup_frac: float = 0.05  # wsd: fraction of the steps spent ramping α_min → α_max
    decay_frac: float = 0.3  # wsd: fraction of the steps (at the end) spent decaying α_max → α_min

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.alpha_min <= 1.0 or not 0.0 <= self.alpha_max <= 1.0:
            raise ValueError(f"alpha_min={self.alpha_min} and alpha_max={self.alpha_max} must be in [0, 1]")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.warmup_frac < 0 or self.decay_frac < 0 or self.warmup_frac + self.decay_frac > 1:
            raise ValueError(f"warmup_frac={self.warmup_frac} and decay_frac={self.decay_frac} must be ≥ 0 and sum "
                             f"to at most 1")


def alpha_at(step: int, steps: int, kd: DistillConfig) -> float:
    """Weight of the soft targets at `step` of `steps` (0-based), per kd.schedule."""
    if steps < 1 or not 0 <= step < steps:
        raise ValueError(f"step {step} is outside a run of {steps} steps")
    lo, hi = kd.alpha_min, kd.alpha_max
    s = step / max(1, steps - 1)  # training progress in [0, 1]
    if kd.schedule == "constant":
        return hi
    if kd.schedule == "linear":
        return hi + (lo - hi) * s  # α_max → α_min
    if kd.schedule == "ramp_up":
        return lo + (hi - lo) * s  # α_min → α_max (hard first, soft later)
    # wsd: warm-up α_min → α_max, hold, decay α_max → α_min over the last decay_frac of the run
    if s < kd.warmup_frac:
        return lo + (hi - lo) * s / kd.warmup_frac
    if s > 1 - kd.decay_frac:
        return hi + (lo - hi) * (s - (1 - kd.decay_frac)) / kd.decay_frac
    return hi


def student_train_config(profile: str | None = None) -> TrainConfig:
    """The students' training run in chapter 07 (and its test), scaled by the profile: short on purpose, since
    distillation is about what a student learns per step. Every student (distilled, codistilled, hard-label
    baseline) uses this config, so they see the same batches in the same order."""
    steps = by_profile(ci=150, laptop=300, profile=profile)
    return TrainConfig(steps=steps, batch_size=8, seq_len=64, lr=3e-3, min_lr=3e-4, warmup_steps=steps // 10,
                       eval_every=steps // 5, eval_batches=8, balance_coef=0.01, seed=1)


@dataclass
class DistillHistory(History):
    alpha: list[float] = field(default_factory=list)  # α(t) used at each step (0 for the hard-label baseline)
    soft_loss: list[float] = field(default_factory=list)  # T² · KL(teacher ‖ student) per step (nan without teacher)
    teacher_val_loss: list[float] = field(default_factory=list)  # teacher's validation CE at eval_steps (codistill)


def distill(student: Llama4, teacher: Llama4 | None, train_ids: torch.Tensor, val_ids: torch.Tensor,
            cfg: TrainConfig, kd: DistillConfig | None = None, *, codistill: bool = False,
            teacher_cfg: TrainConfig | None = None, progress: bool = True, desc: str = "distilling",
            on_eval=None) -> DistillHistory:
    """Train `student` in place on train_ids with the distillation loss against `teacher`; returns the history.

    teacher=None trains on hard labels only (the baseline). codistill=True also trains the teacher, on the same
    batches, with its own optimizer and teacher_cfg (learning rate schedule, balance loss; default cfg), and records
    its validation loss. Validation is plain next-token CE (`pretrain.evaluate`), so every student is measured alike.
    """
    kd = kd or DistillConfig()
    if teacher is None and codistill:
        raise ValueError("codistill=True needs a teacher to train alongside the student")
    if teacher is not None and teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(f"teacher vocabulary ({teacher.config.vocab_size}) differs from the student's "
                         f"({student.config.vocab_size}): soft targets need the same tokens")
    teacher_cfg = teacher_cfg or cfg
    opt = make_optimizer(student, cfg)
    t_opt = make_optimizer(teacher, teacher_cfg) if codistill else None
    g = torch.Generator().manual_seed(cfg.seed)  # the batch order: the same for every student given the same cfg
    hist = DistillHistory()
    student.train()
    if teacher is not None:
        teacher.train(codistill)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        x, y = get_batch(train_ids, cfg.batch_size, cfg.seq_len, g)
        logits, routing = student(x, return_routing=True)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))  # the hard targets
        if teacher is None:
            alpha, soft, loss = 0.0, None, ce + router_aux_loss(routing, cfg)
        else:
            if codistill:  # one teacher forward pass: its own training step and the student's soft targets
                t_logits, t_routing = teacher(x, return_routing=True)
                t_ce = F.cross_entropy(t_logits.reshape(-1, t_logits.shape[-1]).float(), y.reshape(-1))
                optimizer_step(t_opt, t_ce + router_aux_loss(t_routing, teacher_cfg), teacher, teacher_cfg.grad_clip,
                               lr=lr_at(step, teacher_cfg))
                t_logits = t_logits.detach()  # targets from the teacher as it was at this step's forward pass
            else:
                with torch.no_grad():
                    t_logits = teacher(x)
            alpha = alpha_at(step, cfg.steps, kd)
            soft = distillation_loss(logits, t_logits, y, kd.temperature, alpha=1.0)  # T² · KL(p_T ‖ q_T)
            loss = alpha * soft + (1 - alpha) * ce + router_aux_loss(routing, cfg)  # = distillation_loss(α) + aux
        optimizer_step(opt, loss, student, cfg.grad_clip, lr=lr_at(step, cfg))
        hist.steps.append(step)
        hist.train_loss.append(ce.item())
        hist.alpha.append(alpha)
        hist.soft_loss.append(soft.item() if soft is not None else math.nan)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val, load = evaluate(student, val_ids, cfg)
            hist.eval_steps.append(step + 1)
            hist.val_loss.append(val)
            hist.expert_load.append(load)
            if codistill:
                hist.teacher_val_loss.append(evaluate(teacher, val_ids, cfg)[0])
            bar.set_postfix(train=f"{ce.item():.3f}", val=f"{val:.3f}")
            if on_eval is not None:
                on_eval(step + 1, hist)
    student.eval()
    if teacher is not None:
        teacher.eval()
    hist.seconds = time.perf_counter() - t0
    return hist
