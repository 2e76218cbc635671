"""Online RL with verifiable rewards, GRPO-style: the model practises on prompts and learns from its own samples.

Each step:

1. Prompts: `prompts_per_step` tasks mixed over skills and levels; the level weights move linearly from
   `start_weights` to `end_weights` over training (a curriculum toward harder prompts).
2. Rollouts: `group_size` replies per prompt, sampled at `temperature` with the KV cache (`rollout.rollouts`).
3. Rewards r_ij = 1 if reply j to prompt i is correct, else 0 (`tasks.reward`: a program checks the answer).
4. Group-relative advantages a_ij = (r_ij − mean_j r_ij) / (std_j r_ij + 1e-4) (`losses.grpo_advantages`).
   A group whose replies all scored the same (all right: too easy; all wrong: too hard) has a = 0 and teaches
   nothing; with `drop_zero_advantage` it is dropped before the update (Llama 4's "zero-advantage filtering"),
   and with `max_rounds > 1` more prompts are sampled to refill the batch (DAPO's dynamic sampling).
5. `ppo_epochs` updates on the kept groups with the clipped objective, token mean over completion tokens,

       L = mean_t −min(ρ_t a, clip(ρ_t, 1 − ε, 1 + ε) a) + β · mean_t KL_k3(π_θ ‖ π_ref),   ρ_t = π_θ(y_t) / π_old(y_t)

   π_old is the policy that sampled (ρ = 1 on the first epoch); the KL term (β = kl_coef) keeps the policy near the
   frozen reference (the SFT model) and is skipped when β = 0.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch

from ..losses import clipped_policy_loss, grpo_advantages, kl_to_reference, masked_mean, token_logprobs
from ..course.tasks import KINDS, LEVELS, Task, sample_tasks
from .pretrain import TrainConfig, make_optimizer, optimizer_step, seed_everything
from .rollout import MAX_NEW_TOKENS, completion_batch, evaluate, rollouts


@dataclass
class RLConfig:
    steps: int = 60  # sampling + update rounds
    prompts_per_step: int = 8  # P: prompts per batch
    group_size: int = 8  # G: replies sampled per prompt
    temperature: float = 1.0  # sampling temperature of the rollouts
    max_new_tokens: int = MAX_NEW_TOKENS  # reply budget (a reply that does not finish scores 0)
    lr: float = 1e-4  # AdamW learning rate (constant)
    grad_clip: float = 1.0  # max global gradient norm
    clip_eps: float = 0.2  # ε of the clipped ratio
    ppo_epochs: int = 2  # updates per batch of rollouts (> 1 makes the ratio, and so the clip, matter)
    kl_coef: float = 0.02  # β of the k3 KL to the frozen reference (0 = no reference model)
    drop_zero_advantage: bool = True  # drop groups whose rewards are all equal before the update
    max_rounds: int = 1  # sampling rounds per step to refill dropped groups (1 = no refill)
    start_weights: tuple = (0.4, 0.3, 0.3)  # level weights (levels 1, 2, 3) at the first step
    end_weights: tuple = (0.1, 0.3, 0.6)  # level weights at the last step
    kinds: tuple = KINDS  # task skills mixed in each batch
    eval_every: int = 20  # steps between held-out evaluations (0 = only at the end)
    seed: int = 0  # seeds the prompts and the sampling


@dataclass
class RLHistory:
    steps: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)  # mean reward of all sampled replies of the step
    reward_by_level: list[dict] = field(default_factory=list)  # level → mean reward of the step's replies
    frac_dropped: list[float] = field(default_factory=list)  # share of groups with zero advantage
    frac_tokens_used: list[float] = field(default_factory=list)  # completion tokens in the update / all sampled
    groups_sampled: list[int] = field(default_factory=list)  # groups sampled in the step (> prompts_per_step on refill)
    tokens_sampled: list[int] = field(default_factory=list)  # completion tokens generated in the step
    tokens_trained: list[int] = field(default_factory=list)  # completion tokens in the step's update batch
    tokens_informative: list[int] = field(default_factory=list)  # of which in groups with a non-zero advantage
    loss: list[float] = field(default_factory=list)  # policy loss of the last epoch (nan if nothing was kept)
    kl: list[float] = field(default_factory=list)  # mean k3 KL to the reference on the update tokens
    clip_frac: list[float] = field(default_factory=list)  # share of update tokens whose ratio was clipped
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # held-out accuracy at eval_steps
    accuracy_by_level: list[dict] = field(default_factory=list)
    format_rate: list[float] = field(default_factory=list)
    seconds: float = 0.0  # CPU seconds (process time) of the whole stage
    sample_seconds: float = 0.0  # of which sampling the rollouts
    update_seconds: float = 0.0  # of which the policy updates (old/reference log-probs, forward and backward)

    def to_dict(self) -> dict:
        return asdict(self)


def level_weights(step: int, cfg: RLConfig) -> list[float]:
    """The curriculum: level weights interpolated linearly from start_weights (step 0) to end_weights (last step)."""
    if len(cfg.start_weights) != len(LEVELS) or len(cfg.end_weights) != len(LEVELS):
        raise ValueError(f"start_weights and end_weights need one weight per level {LEVELS}")
    f = step / max(1, cfg.steps - 1)
    return [(1 - f) * a + f * b for a, b in zip(cfg.start_weights, cfg.end_weights)]


def policy_loss(model, ids, labels, old_logp, adv_B, cfg: RLConfig, ref_logp=None):
    """(loss, mean KL, clip fraction) of one update on a batch of completions (see the module docstring)."""
    mask = labels != -100
    logp = token_logprobs(model(ids), labels)
    loss = clipped_policy_loss(logp, old_logp, adv_B, mask, cfg.clip_eps)
    kl = torch.zeros(())
    if ref_logp is not None:
        kl = masked_mean(kl_to_reference(logp, ref_logp), mask)
        loss = loss + cfg.kl_coef * kl
    ratio = torch.exp(logp.detach() - old_logp)
    clipped = ((ratio - 1).abs() > cfg.clip_eps) & mask
    return loss, kl.detach(), clipped.sum().item() / max(1, mask.sum().item())


def _sample_groups(model, tok, step: int, cfg: RLConfig, gen: torch.Generator):
    """Sample prompts and their groups (refilling dropped groups up to max_rounds times).
    Returns (all groups sampled, groups kept for the update, their advantages [kept, G], fraction dropped)."""
    all_groups, kept, kept_adv, n_zero = [], [], [], 0
    for rnd in range(max(1, cfg.max_rounds)):
        tasks = sample_tasks(cfg.prompts_per_step, seed=cfg.seed * 1_000_003 + step * 101 + rnd,
                             weights=level_weights(step, cfg), kinds=cfg.kinds)
        groups = rollouts(model, tok, tasks, n=cfg.group_size, temperature=cfg.temperature,
                          max_new_tokens=cfg.max_new_tokens, generator=gen)
        rewards = torch.tensor([[r.reward for r in g] for g in groups])
        adv, keep = grpo_advantages(rewards)
        n_zero += int((~keep).sum())
        for g, a, k in zip(groups, adv, keep.tolist()):
            if k or not cfg.drop_zero_advantage:
                kept.append(g)
                kept_adv.append(a)
        all_groups += groups
        if not cfg.drop_zero_advantage or len(kept) >= cfg.prompts_per_step:
            break
    kept, kept_adv = kept[:cfg.prompts_per_step], kept_adv[:cfg.prompts_per_step]
    adv = torch.stack(kept_adv) if kept_adv else torch.zeros(0, cfg.group_size)
    return all_groups, kept, adv, n_zero / len(all_groups)


def train_rl(model, tok, cfg: RLConfig, eval_tasks: list[Task] | None = None, progress: bool = True,
             desc: str = "rl") -> RLHistory:
    """Online RL on `model` in place (the reference is a frozen copy of it as it was at the start)."""
    from tqdm.auto import tqdm

    t0 = time.process_time()
    seed_everything(cfg.seed)
    ref = None
    if cfg.kl_coef > 0:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=0.0))
    gen = torch.Generator().manual_seed(cfg.seed)
    hist = RLHistory()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        ts = time.process_time()
        all_groups, kept, adv_KG, frac_zero = _sample_groups(model, tok, step, cfg, gen)
        hist.sample_seconds += time.process_time() - ts
        flat = [r for g in all_groups for r in g]
        hist.steps.append(step)
        hist.reward.append(sum(r.reward for r in flat) / len(flat))
        hist.reward_by_level.append({str(lv): _mean([r.reward for r in flat if r.task.level == lv]) for lv in LEVELS})
        hist.frac_dropped.append(frac_zero)
        n_all = sum(len(r.reply_ids) for r in flat)
        n_used = sum(len(r.reply_ids) for g in kept for r in g)
        hist.frac_tokens_used.append(n_used / max(1, n_all))
        hist.groups_sampled.append(len(all_groups))
        hist.tokens_sampled.append(n_all)
        hist.tokens_trained.append(n_used)
        hist.tokens_informative.append(sum(len(r.reply_ids) for g, a in zip(kept, adv_KG) if a.abs().sum() > 0
                                           for r in g))
        loss_v, kl_v, clip_v = float("nan"), float("nan"), float("nan")
        tu = time.process_time()
        if kept:
            rs = [r for g in kept for r in g]
            ids, labels = completion_batch([r.prompt_ids for r in rs], [r.reply_ids for r in rs])
            adv_B = adv_KG.reshape(-1)
            with torch.no_grad():
                model.eval()
                old_logp = token_logprobs(model(ids), labels)  # π_old: the policy that sampled
                ref_logp = token_logprobs(ref(ids), labels) if ref is not None else None
            model.train()
            for _ in range(cfg.ppo_epochs):
                loss, kl, clip_frac = policy_loss(model, ids, labels, old_logp, adv_B, cfg, ref_logp)
                optimizer_step(opt, loss, model, cfg.grad_clip)
            model.eval()
            loss_v, kl_v, clip_v = loss.item(), kl.item(), clip_frac
        hist.update_seconds += time.process_time() - tu
        hist.loss.append(loss_v)
        hist.kl.append(kl_v)
        hist.clip_frac.append(clip_v)
        last = step + 1 == cfg.steps
        if eval_tasks and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            m = evaluate(model, tok, eval_tasks)
            hist.eval_steps.append(step + 1)
            hist.accuracy.append(m["accuracy"])
            hist.accuracy_by_level.append(m["accuracy_by_level"])
            hist.format_rate.append(m["format_rate"])
        bar.set_postfix(reward=f"{hist.reward[-1]:.2f}", dropped=f"{frac_zero:.2f}")
    model.eval()
    hist.seconds = time.process_time() - t0
    return hist


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")
