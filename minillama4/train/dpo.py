"""Direct preference optimisation (DPO) on preference pairs built from the model's own samples.

1. Pairs: for each prompt, sample `samples_per_prompt` replies from the model (which is also the frozen reference).
   Each reply gets a score, 2·correct + formatted. The chosen reply is one that is correct and well formatted
   (`The answer is N.`); the rejected one is the best-scoring reply below it, so that the pair differs in as little
   as possible: usually the same correct answer in another style (a format pair), else a wrong answer (a
   correctness pair). Prompts with no such two replies give no pair.
2. The loss, with sequence log-probs over the reply tokens only (the prompt is never scored),
   s = Σ_t log π(y_t | x, y_<t):

       L = mean −log σ(β · ((s_θ(chosen) − s_ref(chosen)) − (s_θ(rejected) − s_ref(rejected))))

   = ln 2 at the start (policy = reference). DPO only pushes the two log-probs apart, and can do so by lowering
   both, until the model forgets how to answer at all; as in Llama 3's recipe, a negative log-likelihood term on the
   chosen replies (per token, weight `nll_coef`) keeps their probability up. The implicit rewards β · (s_θ − s_ref) of chosen and rejected replies,
   their margin, and the preference accuracy (share of pairs with chosen reward > rejected reward) are tracked.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field

import torch

from ..losses import dpo_loss, sequence_logprobs
from ..course.tasks import KINDS, Task, sample_tasks
from .pretrain import TrainConfig, make_optimizer, optimizer_step, seed_everything
from .rollout import MAX_NEW_TOKENS, Rollout, completion_batch, evaluate, rollouts


@dataclass
class DPOConfig:
    steps: int = 40  # optimizer steps
    pairs_per_step: int = 16  # preference pairs per batch
    pool_prompts: int = 256  # training prompts sampled to build pairs from
    samples_per_prompt: int = 8  # replies sampled per prompt
    temperature: float = 1.0  # sampling temperature for the pairs
    beta: float = 0.1  # β: strength of the implicit KL to the reference
    lr: float = 1e-4  # AdamW learning rate (constant)
    nll_coef: float = 0.2  # weight of the NLL of the chosen replies added to the DPO loss (0 = plain DPO)
    grad_clip: float = 1.0  # max global gradient norm
    kinds: tuple = KINDS  # task skills of the prompts
    eval_every: int = 20  # steps between held-out evaluations (0 = only at the end)
    seed: int = 0  # seeds the prompts, the sampling and the batch order


@dataclass
class Pair:
    prompt_ids: list[int]
    chosen_ids: list[int]  # reply tokens (with the stop token if it came)
    rejected_ids: list[int]
    kind: str  # "format" (both correct, rejected badly formatted) or "correctness" (rejected wrong)
    chosen: str
    rejected: str


@dataclass
class DPOHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # the DPO loss (without the NLL term)
    chosen_reward: list[float] = field(default_factory=list)  # mean β(s_θ − s_ref) of the chosen replies
    rejected_reward: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)  # mean chosen − rejected reward
    pref_accuracy: list[float] = field(default_factory=list)  # share of pairs with chosen reward > rejected reward
    pairs: dict = field(default_factory=dict)  # pair kind → count in the training set
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # held-out accuracy at eval_steps
    format_rate: list[float] = field(default_factory=list)  # held-out format rate at eval_steps
    heldout_pref_accuracy: list[float] = field(default_factory=list)  # on pairs from held-out prompts
    heldout_pref_accuracy_start: float = float("nan")  # the same before training (ties: 0)
    heldout_pairs: int = 0  # pairs built from held-out prompts
    seconds: float = 0.0  # CPU seconds (process time) of the whole stage

    def to_dict(self) -> dict:
        return asdict(self)


def _score(r: Rollout) -> int:
    return 2 * r.correct + r.formatted


def make_pairs(groups: list[list[Rollout]]) -> list[Pair]:
    """One pair per group that has a correct, well-formatted reply and a lower-scoring one (see the docstring)."""
    pairs = []
    for g in groups:
        best = [r for r in g if r.correct and r.formatted]
        if not best:
            continue
        below = [r for r in g if _score(r) < 3]
        if not below:
            continue
        top = max(_score(r) for r in below)
        rej = next(r for r in below if _score(r) == top)
        pairs.append(Pair(best[0].prompt_ids, best[0].reply_ids, rej.reply_ids,
                          "format" if rej.correct else "correctness", best[0].reply, rej.reply))
    return pairs


def sample_pairs(model, tok, tasks: list[Task], cfg: DPOConfig, gen: torch.Generator) -> list[Pair]:
    return make_pairs(rollouts(model, tok, tasks, n=cfg.samples_per_prompt, temperature=cfg.temperature,
                               max_new_tokens=MAX_NEW_TOKENS, generator=gen))


def pair_logps(model, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs [P] of the chosen and the rejected replies under `model` (reply tokens only)."""
    ids, labels = completion_batch([p.prompt_ids for p in pairs] * 2,
                                   [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs])
    s = sequence_logprobs(model(ids), labels)
    return s[:len(pairs)], s[len(pairs):]


def chosen_nll(pc_P: torch.Tensor, pairs: list[Pair]) -> torch.Tensor:
    """−Σ log π(chosen) / (number of chosen tokens): the per-token NLL of the chosen replies."""
    return -pc_P.sum() / sum(len(p.chosen_ids) for p in pairs)


@torch.no_grad()
def preference_accuracy(model, ref, pairs: list[Pair], beta: float) -> float:
    """Share of pairs whose implicit reward β(s_θ − s_ref) is higher for the chosen reply."""
    if not pairs:
        return float("nan")
    pc, pr = pair_logps(model, pairs)
    rc, rr = pair_logps(ref, pairs)
    _, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
    return (cr > rj).float().mean().item()


def train_dpo(model, tok, cfg: DPOConfig, eval_tasks: list[Task] | None = None, progress: bool = True,
              desc: str = "dpo") -> DPOHistory:
    """DPO on `model` in place, against a frozen copy of it as it was at the start."""
    from tqdm.auto import tqdm

    t0 = time.process_time()
    seed_everything(cfg.seed)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    pairs = sample_pairs(model, tok, sample_tasks(cfg.pool_prompts, seed=cfg.seed + 77, kinds=cfg.kinds), cfg, gen)
    if not pairs:
        raise RuntimeError("no preference pair could be built: the model never answered correctly in the house "
                           "format while also answering worse (train SFT longer or sample more replies)")
    heldout = sample_pairs(model, tok, eval_tasks, cfg, gen) if eval_tasks else []
    hist = DPOHistory(pairs={k: sum(p.kind == k for p in pairs) for k in ("format", "correctness")})
    hist.heldout_pairs = len(heldout)
    hist.heldout_pref_accuracy_start = preference_accuracy(model, ref, heldout, cfg.beta)
    with torch.no_grad():
        ref_c, ref_r = pair_logps(ref, pairs)  # the reference never changes: score it once
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=0.0))
    rng = random.Random(cfg.seed)
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = rng.sample(range(len(pairs)), min(cfg.pairs_per_step, len(pairs)))
        model.train()
        batch = [pairs[i] for i in idx]
        pc, pr = pair_logps(model, batch)
        loss, cr, rj = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], cfg.beta)
        total = loss + cfg.nll_coef * chosen_nll(pc, batch) if cfg.nll_coef else loss
        optimizer_step(opt, total, model, cfg.grad_clip)
        model.eval()
        hist.steps.append(step)
        hist.loss.append(loss.item())
        hist.chosen_reward.append(cr.mean().item())
        hist.rejected_reward.append(rj.mean().item())
        hist.margin.append((cr - rj).mean().item())
        hist.pref_accuracy.append((cr > rj).float().mean().item())
        last = step + 1 == cfg.steps
        if eval_tasks and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            m = evaluate(model, tok, eval_tasks)
            hist.eval_steps.append(step + 1)
            hist.accuracy.append(m["accuracy"])
            hist.format_rate.append(m["format_rate"])
            hist.heldout_pref_accuracy.append(preference_accuracy(model, ref, heldout, cfg.beta))
        bar.set_postfix(loss=f"{loss.item():.3f}", margin=f"{hist.margin[-1]:.2f}")
    model.eval()
    hist.seconds = time.process_time() - t0
    return hist
