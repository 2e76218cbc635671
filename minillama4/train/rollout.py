"""Asking a chat model questions: prompts in the chat format, replies sampled with the KV cache, graded.

Shared by SFT (evaluation), online RL (groups of samples per prompt) and DPO (pairs from the model's own samples).

`model.generate` runs a batch of prompts of one length (no padding, so no attention mask is needed): prompts are
grouped by their token length, and each group is one batched call, with `n` copies of each prompt for sampling
groups. Rows stop at <|eot|>; the rest of the row is filled with the stop token and ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from ..chat import decode_reply, encode_prompt, stop_ids
from ..course.tasks import Task, grade

MAX_NEW_TOKENS = 12  # "The answer is 123." is 9 tokens + <|eot|>


@dataclass
class Rollout:
    task: Task
    prompt_ids: list[int]  # the chat prompt, ending with the open assistant header
    reply_ids: list[int]  # the generated tokens up to and including the stop token (if one came)
    reply: str  # the reply text (before the stop token)
    finished: bool  # the model ended its turn within the token budget
    correct: bool
    formatted: bool

    @property
    def reward(self) -> float:
        return float(self.correct)


@torch.no_grad()
def rollouts(model, tok, tasks: list[Task], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = MAX_NEW_TOKENS, generator: torch.Generator | None = None,
             max_batch: int = 256) -> list[list[Rollout]]:
    """n replies per task (greedy at temperature 0): result[i][j] is the j-th reply to tasks[i]."""
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
    was_training = model.training
    model.eval()
    stops = stop_ids(tok)
    prompts = [encode_prompt(tok, t.messages()) for t in tasks]
    by_len = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    out: list[list[Rollout | None]] = [[None] * n for _ in tasks]
    for length in sorted(by_len):
        idx = by_len[length]
        per_call = max(1, max_batch // n)
        for s in range(0, len(idx), per_call):
            part = idx[s:s + per_call]
            ids_BT = torch.tensor([prompts[i] for i in part for _ in range(n)], device=model.device)
            gen_BT = model.generate(ids_BT, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    eos_token_id=stops, generator=generator)[:, length:].tolist()
            for r, row in enumerate(gen_BT):
                i, j = part[r // n], r % n
                text, finished = decode_reply(tok, row)
                keep = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))  # up to the stop token
                g = grade(text, tasks[i], finished)
                out[i][j] = Rollout(tasks[i], prompts[i], row[:keep], text, finished, g.correct, g.formatted)
    model.train(was_training)
    return out


def evaluate(model, tok, tasks: list[Task], max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Greedy replies to every task: accuracy and format rate, overall and per level (and per kind)."""
    rs = [r[0] for r in rollouts(model, tok, tasks, n=1, temperature=0.0, max_new_tokens=max_new_tokens)]

    def rate(sel, attr):
        sel = list(sel)
        return sum(getattr(r, attr) for r in sel) / max(1, len(sel))

    levels = sorted({t.level for t in tasks})
    kinds = sorted({t.kind for t in tasks})
    return {
        "accuracy": rate(rs, "correct"),
        "format_rate": rate(rs, "formatted"),
        "finished_rate": rate(rs, "finished"),
        "accuracy_by_level": {str(lv): rate((r for r in rs if r.task.level == lv), "correct") for lv in levels},
        "format_by_level": {str(lv): rate((r for r in rs if r.task.level == lv), "formatted") for lv in levels},
        "accuracy_by_kind": {k: rate((r for r in rs if r.task.kind == k), "correct") for k in kinds},
        "examples": [{"question": r.task.question, "answer": r.task.answer, "reply": r.reply,
                      "correct": r.correct, "formatted": r.formatted} for r in rs[:: max(1, len(rs) // 6)]],
    }


def pad_batch(seqs: list[list[int]], labels: list[list[int]] | None = None, pad_id: int = 0,
              ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad token lists to one length: ids [B, T] (pad_id after the end) and labels [B, T] (-100 there).
    Right padding needs no attention mask for a causal model: real tokens never attend to later (pad) positions."""
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), T), ignore_index, dtype=torch.long) if labels is not None else None
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        if labels is not None:
            if len(labels[b]) != len(s):
                raise ValueError(f"row {b}: {len(s)} tokens but {len(labels[b])} labels")
            lab[b, :len(s)] = torch.tensor(labels[b], dtype=torch.long)
    return ids, lab


def completion_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int = 0):
    """(ids [B, T-1], labels [B, T-1]) for scoring completions after prompts: position t predicts token t+1, and
    only completion tokens carry a label (prompt and padding are -100)."""
    seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
    labels = [[-100] * len(p) + list(c) for p, c in zip(prompts, completions)]
    ids, lab = pad_batch(seqs, labels, pad_id)
    return ids[:, :-1], lab[:, 1:]
