"""Pretraining a toy Llama 4 on the course corpus: next-token cross-entropy, plus the MoE balancing losses.

    loss = CE(next token) + balance_coef · mean_layers L_balance + z_loss_coef · mean_layers L_z

AdamW with linear warm-up and cosine decay, gradient clipping, weight decay on matrices only. Every `eval_every`
steps: validation loss and the fraction of tokens each expert received in each MoE layer (for load pictures).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import load_balancing_loss, router_z_loss
from ..metap import param_groups
from ..model import Llama4
from ..parallel import clip_grad_norm_, this_ranks_rows


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) at once."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per step
    seq_len: int = 128  # tokens per sequence
    lr: float = 3e-3  # peak AdamW learning rate
    min_lr: float = 3e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 50  # linear warm-up from 0 to lr
    weight_decay: float = 0.1  # AdamW decay on weight matrices (not on norms)
    grad_clip: float = 1.0  # max global gradient norm
    balance_coef: float = 0.01  # weight of the Switch load-balancing loss (0 = off)
    z_loss_coef: float = 0.0  # weight of the router z-loss (0 = off)
    eval_every: int = 100  # steps between validation evaluations
    eval_batches: int = 8  # batches per validation estimate (fixed windows, same every time)
    seed: int = 0  # seeds the init and the batch order


@dataclass
class History:
    steps: list[int] = field(default_factory=list)  # steps at which train_loss was recorded
    train_loss: list[float] = field(default_factory=list)  # cross-entropy of that step's batch
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # validation cross-entropy at eval_steps
    expert_load: list[list[list[float]]] = field(default_factory=list)  # per eval: [MoE layer][expert] token share
    seconds: float = 0.0  # wall time of the whole run

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)


def get_batch(ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """Random windows of a token stream: x [B, T] and the next tokens y [B, T] (y = x shifted by one)."""
    if ids.numel() <= seq_len + 1:
        raise ValueError(f"token stream of {ids.numel()} tokens is too short for seq_len={seq_len}")
    starts = torch.randint(0, ids.numel() - seq_len - 1, (batch_size,), generator=generator)
    x = torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + seq_len + 1] for s in starts.tolist()])
    return x, y


def router_aux_loss(routing, cfg: TrainConfig):
    """balance_coef · mean_layers L_balance + z_loss_coef · mean_layers L_z (0 without MoE layers or coefficients)."""
    loss = 0.0
    if routing and cfg.balance_coef:
        loss = loss + cfg.balance_coef * torch.stack(
            [load_balancing_loss(r.logits, r.indices.shape[-1]) for r in routing]).mean()
    if routing and cfg.z_loss_coef:
        loss = loss + cfg.z_loss_coef * torch.stack([router_z_loss(r.logits) for r in routing]).mean()
    return loss


def lm_loss(model: Llama4, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig):
    """(total loss, cross-entropy, routing) for one batch."""
    logits, routing = model(x, return_routing=True)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    loss = ce + router_aux_loss(routing, cfg)
    return loss, ce, routing


@torch.no_grad()
def evaluate(model: Llama4, ids: torch.Tensor, cfg: TrainConfig):
    """Mean validation cross-entropy over fixed windows, and the token share per expert per MoE layer."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(10_000 + cfg.seed)  # the same windows at every evaluation
    losses, counts = [], None
    for _ in range(cfg.eval_batches):
        x, y = get_batch(ids, cfg.batch_size, cfg.seq_len, g)
        _, ce, routing = lm_loss(model, x, y, cfg)
        losses.append(ce.item())
        c = torch.stack([torch.bincount(r.indices.reshape(-1), minlength=r.logits.shape[-1]) for r in routing]) \
            if routing else torch.zeros(0, 0)
        counts = c if counts is None else counts + c
    model.train(was_training)
    load = (counts.float() / counts.sum(-1, keepdim=True).clamp(min=1)).tolist()
    return sum(losses) / len(losses), load


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model: Llama4, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW: under "metap" one group per MetaP rule with its own learning-rate multiplier (metap.py), otherwise
    one learning rate for all, weight decay on matrices only."""
    inner = model
    while not hasattr(inner, "config") and hasattr(inner, "module"):  # DistributedDataParallel(model) → model
        inner = inner.module
    if inner.config.parametrization == "metap":
        return torch.optim.AdamW(param_groups(inner, cfg.lr, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, model: torch.nn.Module, grad_clip: float,
                   lr: float | None = None) -> None:
    """One update, the same in every training loop of the course: (set the learning rate, times each group's
    `lr_mult` if it has one,) back-propagate, clip the global gradient norm of `model`'s parameters to `grad_clip`
    (all ranks' experts included), step."""
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_grad_norm_(model, grad_clip)
    opt.step()


def train(model: Llama4, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: TrainConfig, progress: bool = True,
          desc: str = "training", on_eval=None, on_step=None) -> History:
    """Train in place; returns the History. on_eval(step, history) is called after each evaluation
    (e.g. a notebook dashboard); on_step(step, routing) after each optimizer step, with that batch's router outputs
    (e.g. to update aux-loss-free balancing biases)."""
    import time

    from tqdm.auto import tqdm

    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    hist = History()
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        x, y = get_batch(train_ids, cfg.batch_size, cfg.seq_len, g)
        x, y = this_ranks_rows(model, x, y)  # data parallel (a DDP model): this rank's rows of the batch
        loss, ce, routing = lm_loss(model, x, y, cfg)
        optimizer_step(opt, loss, model, cfg.grad_clip, lr=lr_at(step, cfg))
        if on_step is not None:
            on_step(step, routing)
        hist.steps.append(step)
        hist.train_loss.append(ce.item())
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val, load = evaluate(model, val_ids, cfg)
            hist.eval_steps.append(step + 1)
            hist.val_loss.append(val)
            hist.expert_load.append(load)
            bar.set_postfix(train=f"{ce.item():.3f}", val=f"{val:.3f}")
            if on_eval is not None:
                on_eval(step + 1, hist)
    model.eval()
    hist.seconds = time.perf_counter() - t0
    return hist
