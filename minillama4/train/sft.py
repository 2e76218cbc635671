"""Supervised fine-tuning (SFT): teach a pretrained model to answer in the chat format, on the harder examples.

1. Examples: task questions in the Llama 4 chat format with a written reply. The replies come in a few styles
   (`The answer is 7.` with probability `canonical_fraction`, else `Answer: 7` or `It is 7`), as human-written SFT
   data would: the model learns to answer, and how consistently it uses the canonical form is left for DPO (chapter
   10). Every style puts the same token before the number (a space), so the number is always the same token.
2. Pruning with a judge (Llama 4 dropped more than half of its SFT data as "easy", using Llama models as judges):
   the judge scores each example by how surprising its answer is, the summed negative log-likelihood of the answer
   tokens of the canonical reply, −Σ log p_judge(answer token | question, reply so far), and the `keep_fraction`
   hardest are kept. A judge must know the task to tell easy from hard (the base model has never seen the chat
   format: to it every answer is a guess), so by default the model judges itself: after `judge_at` steps on the
   whole pool it scores the pool, and the rest of SFT uses the hard part only.
3. The loss is next-token cross-entropy on the assistant's tokens only:

       L = −(1/N) Σ_{t: label_t ≠ −100} log p_θ(label_t | tokens ≤ t)

   where prompt, header and padding positions carry the label −100, and N counts the assistant tokens.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..chat import IGNORE_INDEX, encode_chat, encode_prompt, sft_example
from ..losses import token_logprobs
from ..course.tasks import KINDS, LEVELS, Task, sample_tasks
from .pretrain import make_optimizer, optimizer_step, seed_everything
from .rollout import evaluate, pad_batch

STYLES = ("The answer is {}.", "Answer: {}", "It is {}")  # the canonical style first


@dataclass
class SFTConfig:
    steps: int = 200  # optimizer steps
    batch_size: int = 32  # examples per step
    lr: float = 1e-3  # peak AdamW learning rate (linear warm-up, then linear decay to 10%)
    warmup_steps: int = 20  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW decay on matrices
    grad_clip: float = 1.0  # max global gradient norm
    pool_size: int = 4000  # candidate examples before pruning
    keep_fraction: float = 0.5  # share of the pool the judge keeps (the hardest); 1.0 = no pruning
    judge_at: int = 50  # step at which the model judges the pool itself and prunes it (0: an external judge, at the start)
    canonical_fraction: float = 0.6  # share of replies written "The answer is N." (the rest in other styles)
    eval_every: int = 50  # steps between held-out evaluations (0 = only at the end)
    kinds: tuple = KINDS  # task skills in the pool
    seed: int = 0  # seeds the pool, the styles and the batch order


@dataclass
class SFTHistory:
    steps: list[int] = field(default_factory=list)  # steps at which loss was recorded
    loss: list[float] = field(default_factory=list)  # assistant-token cross-entropy of that step's batch
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # held-out accuracy at eval_steps
    format_rate: list[float] = field(default_factory=list)  # held-out format rate at eval_steps
    pool_levels: dict = field(default_factory=dict)  # level → examples in the pool before pruning
    kept_levels: dict = field(default_factory=dict)  # level → examples the judge kept
    judged_at: int = -1  # the step at which the pool was pruned (-1: never)
    seconds: float = 0.0  # CPU seconds (process time) of the whole stage

    def to_dict(self) -> dict:
        return asdict(self)


def styled_reply(task: Task, rng: random.Random, canonical_fraction: float) -> str:
    """The reply of one SFT example: canonical with probability canonical_fraction, else another style."""
    if rng.random() < canonical_fraction:
        return STYLES[0].format(task.answer)
    return rng.choice(STYLES[1:]).format(task.answer)


def make_examples(tasks: list[Task], tok, canonical_fraction: float, seed: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) token lists, one per task, with the reply in a randomly drawn style."""
    rng = random.Random(seed)
    out = []
    for t in tasks:
        x, y = sft_example(tok, t.messages() + [{"role": "assistant", "content": styled_reply(t, rng, canonical_fraction)}])
        out.append((x.tolist(), y.tolist()))
    return out


def masked_cross_entropy(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """−(1/N) Σ_{t: label ≠ −100} log softmax(logits_t)[label_t], N = the number of counted positions."""
    if logits_BTV.shape[:-1] != labels_BT.shape:
        raise ValueError(f"logits {tuple(logits_BTV.shape)} must be labels {tuple(labels_BT.shape)} + [vocab]")
    if not (labels_BT != IGNORE_INDEX).any():
        raise ValueError("every label is -100: the batch has no assistant token to learn from")
    return F.cross_entropy(logits_BTV.reshape(-1, logits_BTV.shape[-1]).float(), labels_BT.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def sft_loss(model, ids_BT: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100 (the assistant's tokens)."""
    if not (labels_BT != IGNORE_INDEX).any():
        raise ValueError("every label is -100: the batch has no assistant token to learn from")
    return masked_cross_entropy(model(ids_BT), labels_BT)


@torch.no_grad()
def judge_scores(judge, tok, tasks: list[Task], batch_size: int = 128) -> torch.Tensor:
    """How hard each task looks to the judge: −Σ log p_judge(answer tokens) in the canonical reply. [N]"""
    judge.eval()
    scores = []
    for s in range(0, len(tasks), batch_size):
        part = tasks[s:s + batch_size]
        seqs, labels = [], []
        for t in part:
            prefix = encode_prompt(tok, t.messages()) + tok.encode("The answer is", allow_special=False)
            full, _ = encode_chat(tok, t.messages() + [{"role": "assistant", "content": t.reply()}])
            n_answer = len(full) - len(prefix) - 2  # the answer's tokens: after "The answer is", before "." <|eot|>
            if full[:len(prefix)] != prefix or n_answer < 1:
                raise RuntimeError(f"cannot locate the answer tokens of {t.question!r}")  # pragma: no cover
            seqs.append(full)
            labels.append([IGNORE_INDEX] * len(prefix) + full[len(prefix):len(prefix) + n_answer] + [IGNORE_INDEX] * 2)
        ids, lab = pad_batch(seqs, labels)
        lp = token_logprobs(judge(ids[:, :-1]), lab[:, 1:])
        scores.append(-lp.sum(-1))
    return torch.cat(scores)


def prune_easy(tasks: list[Task], scores: torch.Tensor, keep_fraction: float) -> list[Task]:
    """Keep the keep_fraction of tasks with the highest judge scores (the hardest), in their original order."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if scores.shape != (len(tasks),):
        raise ValueError(f"need one score per task: {len(tasks)} tasks, scores of shape {tuple(scores.shape)}")
    k = max(1, round(keep_fraction * len(tasks)))
    keep = scores.topk(k).indices.sort().values  # stable original order
    return [tasks[i] for i in keep.tolist()]


def _lr(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (1 - 0.9 * min(1.0, t))


def train_sft(model, tok, cfg: SFTConfig, eval_tasks: list[Task] | None = None, judge=None,
              progress: bool = True, desc: str = "sft") -> SFTHistory:
    """Fine-tune `model` in place on chat examples, judge-pruned (see the module docstring); returns the SFTHistory.
    With keep_fraction 1 nothing is pruned; with judge_at 0 the given `judge` model prunes before the first step."""
    from tqdm.auto import tqdm

    t0 = time.process_time()
    seed_everything(cfg.seed)
    hist = SFTHistory()
    pool = sample_tasks(cfg.pool_size, seed=cfg.seed, kinds=cfg.kinds)
    hist.pool_levels = hist.kept_levels = {str(lv): sum(t.level == lv for t in pool) for lv in LEVELS}
    prune = cfg.keep_fraction < 1

    def judge_and_prune(step, judge_model):
        nonlocal pool, examples
        pool = prune_easy(pool, judge_scores(judge_model, tok, pool), cfg.keep_fraction)
        examples = make_examples(pool, tok, cfg.canonical_fraction, cfg.seed + 1)
        hist.kept_levels = {str(lv): sum(t.level == lv for t in pool) for lv in LEVELS}
        hist.judged_at = step

    examples = make_examples(pool, tok, cfg.canonical_fraction, cfg.seed + 1)
    if prune and cfg.judge_at == 0:
        if judge is None:
            raise ValueError("judge_at=0 prunes before training and needs a judge model (or set keep_fraction=1)")
        judge_and_prune(0, judge)

    opt = make_optimizer(model, _as_train_cfg(cfg))
    g = torch.Generator().manual_seed(cfg.seed)
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        if prune and cfg.judge_at and step == cfg.judge_at:
            judge_and_prune(step, model)
            model.train()
        pick = torch.randint(0, len(examples), (cfg.batch_size,), generator=g).tolist()
        ids, labels = pad_batch([examples[i][0] for i in pick], [examples[i][1] for i in pick])
        loss = sft_loss(model, ids, labels)
        optimizer_step(opt, loss, model, cfg.grad_clip, lr=_lr(step, cfg))
        hist.steps.append(step)
        hist.loss.append(loss.item())
        last = step + 1 == cfg.steps
        if eval_tasks and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            m = evaluate(model, tok, eval_tasks)
            hist.eval_steps.append(step + 1)
            hist.accuracy.append(m["accuracy"])
            hist.format_rate.append(m["format_rate"])
            model.train()
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{m['accuracy']:.2f}")
    model.eval()
    hist.seconds = time.process_time() - t0
    return hist


def _as_train_cfg(cfg: SFTConfig):
    from .pretrain import TrainConfig

    return TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay)
