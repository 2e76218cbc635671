"""Long-context experiments (chapter 04): train short, test long; a needle in a haystack.

Llama 4 mixes two kinds of attention layer (iRoPE): three of every four use RoPE inside fixed chunks, every fourth
uses no position encoding at all and attends to the whole context. This module holds what the chapter needs to test
that mix at toy scale against RoPE everywhere and NoPE everywhere:

    position_variants(config, chunk_size)     {"RoPE": …, "NoPE": …, "iRoPE": …}: configs that differ only in attention
    NeedleTask.for_course_tokenizer(text)     seeded passkey sequences over the course BPE: corpus text as the haystack,
                                              a needle  <|python_start|> k_1 … k_m  hidden in it, later a query
                                              <|python_end|> k_1 … k_m  (the model must name the passkey after the marker)
    needle_train_config(seq_len)              the chapter's training recipe, scaled by the profile
    train_needle(config, task, train_cfg)     trains one variant on those sequences (next-token loss + passkey loss)
    loss_by_position(model, ids, length)      mean next-token cross-entropy at each position of long text windows
    retrieval_accuracy(model, task, length)   how often the model names the whole passkey, needle at a given depth

Everything is seeded: the same arguments give the same sequences, the same model and the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import Llama4Config
from ..model import Llama4
from ..train import TrainConfig, lr_at, make_optimizer, optimizer_step, seed_everything
from .profile import by_profile

NEEDLE_TOKEN = "<|python_start|>"  # opens the needle:  <|python_start|> k_1 … k_m   ("the passkey is …")
QUERY_TOKEN = "<|python_end|>"  # opens the query:   <|python_end|> → the model must say k_1 … k_m
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz"  # passkey tokens: single-byte tokens of the course tokenizer


def position_variants(config: Llama4Config, chunk_size: int | None = None,
                      floor_scale: int | None = None) -> dict[str, Llama4Config]:
    """Three configs that differ only in how attention sees positions (same weights' shapes and parameter count):

    RoPE   every layer rotates q, k by position (RoPE) and attends to the whole causal past (no chunks);
    NoPE   no layer has any position encoding; every layer attends globally (with temperature tuning if on);
    iRoPE  Llama 4's mix: every `no_rope_layer_interval`-th layer NoPE (global, temperature tuning), the others RoPE
           inside chunks of `chunk_size` tokens (block-diagonal causal mask).

    chunk_size defaults to the config's attention_chunk_size; floor_scale (temperature tuning steps) defaults to the
    chunk size, as in Llama 4 (both 8192)."""
    chunk = config.attention_chunk_size if chunk_size is None else chunk_size
    if chunk is None or chunk <= 0:
        raise ValueError(f"iRoPE needs a positive chunk size, got {chunk!r}")
    floor = chunk if floor_scale is None else floor_scale
    L = config.num_hidden_layers
    interval = config.no_rope_layer_interval
    irope_layers = [int((i + 1) % interval != 0) for i in range(L)]
    return {
        "RoPE": config.replace(no_rope_layers=[1] * L, attention_chunk_size=None, floor_scale=floor),
        "NoPE": config.replace(no_rope_layers=[0] * L, attention_chunk_size=chunk, floor_scale=floor),
        "iRoPE": config.replace(no_rope_layers=irope_layers, attention_chunk_size=chunk, floor_scale=floor),
    }


@dataclass
class NeedleBatch:
    ids: torch.Tensor  # [B, T] input tokens
    targets: torch.Tensor  # [B, T] next tokens (ids shifted by one; the last one is -100, i.e. ignored)
    answer_pos: torch.Tensor  # [B, n·m] positions whose next token is a passkey token: each query's marker and its
    #                           first m-1 key tokens (teacher forcing), i.e. the logits there must name the passkey
    answers: torch.Tensor  # [B, n·m] the passkey tokens, once per query
    needle_pos: torch.Tensor  # [B] position of the needle's marker token
    query_pos: torch.Tensor  # [B, n] positions of the queries' marker tokens


@dataclass
class NeedleTask:
    """A passkey hidden in real text, over the course tokenizer's vocabulary.

    A sequence of T tokens is a window of `haystack` (a token stream, e.g. `course_tokens("val").ids`) with a needle
    [NEEDLE, k_1 … k_m] inserted somewhere, and later n_queries queries [QUERY, k_1 … k_m] that repeat it. The model
    is scored on the passkey after the query marker: it has to find the needle, however far back, and copy the
    m tokens that follow its marker. The passkey is random for every sequence (chance: 1/len(key_ids)^m), so
    nothing but retrieval predicts it.
    key_ids / needle_id / query_id: token ids (see `for_course_tokenizer`)."""

    haystack: torch.Tensor
    key_ids: tuple[int, ...]
    needle_id: int
    query_id: int
    key_len: int = 2
    n_queries: int = 1

    @classmethod
    def for_course_tokenizer(cls, haystack: torch.Tensor, key_len: int = 2, n_queries: int = 1) -> "NeedleTask":
        """Passkey tokens a–z (single tokens of the course BPE), markers <|python_start|> / <|python_end|>."""
        from .data import course_tokenizer

        tok = course_tokenizer()
        return cls(haystack, tuple(_single_token(tok, c) for c in KEY_CHARS), tok.special_ids[NEEDLE_TOKEN],
                   tok.special_ids[QUERY_TOKEN], key_len, n_queries)

    def sample(self, batch_size: int, length: int, generator: torch.Generator, depth: float | None = None,
               query_at_end: bool | None = None) -> NeedleBatch:
        """batch_size sequences of `length` tokens.

        depth=None puts the needle anywhere in the text; depth in [0, 1] puts it at that fraction of the text
        (0 = first token, 1 = just before the query). Training sequences (query_at_end=False) have n_queries queries
        at random places after the needle, so that no position is special; with query_at_end (the default when a
        depth is given) a single query ends the sequence, so that its distance to the needle grows with the length."""
        m = self.key_len
        at_end = depth is not None if query_at_end is None else query_at_end
        nq = 1 if at_end else self.n_queries
        text_len = length - (1 + nq) * (m + 1)
        if m < 1 or nq < 1:
            raise ValueError(f"key_len and n_queries must be >= 1, got {m}, {nq}")
        if text_len < 1:
            raise ValueError(f"length {length} leaves no room for text around a needle and {nq} queries of "
                             f"{m + 1} tokens each")
        if self.haystack.numel() <= text_len:
            raise ValueError(f"haystack of {self.haystack.numel()} tokens is too short for {text_len} tokens of text")
        if depth is not None and not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth must be in [0, 1] or None, got {depth}")
        keys_V = torch.tensor(self.key_ids)
        rows, needle_pos, query_pos, answers = [], [], [], []
        for _ in range(batch_size):
            start = int(torch.randint(0, self.haystack.numel() - text_len, (1,), generator=generator))
            text = self.haystack[start:start + text_len]
            key = keys_V[torch.randint(0, len(keys_V), (m,), generator=generator)]
            # the needle goes before text token a, the queries before text tokens b_1 <= … <= b_nq (a <= b_1)
            if depth is not None:
                a = round(depth * text_len)
            else:
                a = int(torch.randint(0, text_len + 1, (1,), generator=generator))
            if at_end:
                b = [text_len]
            else:
                b = sorted(torch.randint(a, text_len + 1, (nq,), generator=generator).tolist())
            needle = torch.cat([torch.tensor([self.needle_id]), key])
            query = torch.cat([torch.tensor([self.query_id]), key])
            pieces, qpos, prev = [text[:a], needle], [], a
            for j, bj in enumerate(b):
                pieces += [text[prev:bj], query]
                qpos.append(bj + (j + 1) * (m + 1))  # text before it + the needle and the earlier queries
                prev = bj
            pieces.append(text[prev:])
            rows.append(torch.cat(pieces))
            needle_pos.append(a)
            query_pos.append(qpos)
            answers.append(key.repeat(nq))
        ids = torch.stack(rows)
        targets = torch.cat([ids[:, 1:], torch.full((batch_size, 1), -100)], 1)
        query_pos_BQ = torch.tensor(query_pos)
        # the query marker predicts k_1, k_1 predicts k_2, …
        answer_pos = (query_pos_BQ[:, :, None] + torch.arange(m)).flatten(1)
        return NeedleBatch(ids, targets, answer_pos, torch.stack(answers), torch.tensor(needle_pos), query_pos_BQ)


def _single_token(tok, s: str) -> int:
    ids = tok.encode(s, allow_special=False)
    if len(ids) != 1:
        raise ValueError(f"{s!r} is not a single token of the tokenizer (got {ids})")
    return ids[0]


def needle_loss(model: Llama4, batch: NeedleBatch, answer_weight: float = 1.0):
    """(loss, text cross-entropy, answer cross-entropy): CE over every next token, plus answer_weight × CE at the
    query positions alone (a few tokens per sequence: without the extra weight they barely move the average)."""
    logits_BTV = model(batch.ids)
    ce = F.cross_entropy(logits_BTV.flatten(0, 1).float(), batch.targets.flatten())
    ans_logits = logits_BTV.gather(1, batch.answer_pos[..., None].expand(-1, -1, logits_BTV.shape[-1]))
    ce_ans = F.cross_entropy(ans_logits.flatten(0, 1).float(), batch.answers.flatten())
    return ce + answer_weight * ce_ans, ce, ce_ans


def needle_train_config(seq_len: int = 64, profile: str | None = None, seed: int = 0) -> TrainConfig:
    """The chapter's recipe for `train_needle`: AdamW at 3e-3 (30 warm-up steps, cosine decay to 3e-4);
    laptop: 2000 steps of 16 sequences of seq_len tokens; ci: 600 steps of 8. `seed` (init and sequences) is 0 in
    the course; `bench/model_claims_spread.py` trains others to measure how much a result owes to it."""
    steps, batch = by_profile(ci=(600, 8), laptop=(2000, 16), profile=profile)
    return TrainConfig(steps=steps, batch_size=batch, seq_len=seq_len, lr=3e-3, min_lr=3e-4, warmup_steps=30, seed=seed)


@dataclass
class NeedleHistory:
    loss: list[float]  # next-token cross-entropy over whole sequences (text, needle and queries) per step
    answer_loss: list[float]  # cross-entropy at the query positions per step
    seconds: float  # wall time of the run


def train_needle(config: Llama4Config, task: NeedleTask, cfg: TrainConfig, answer_weight: float = 1.0,
                 progress: bool = False, desc: str = "training") -> tuple[Llama4, NeedleHistory]:
    """Build a model from `config` (seeded by cfg.seed) and train it on task.sample(cfg.batch_size, cfg.seq_len)
    with AdamW, warm-up + cosine schedule and gradient clipping as in `minillama4.train` (no MoE balancing loss:
    meant for dense configs). Returns (model in eval mode, history)."""
    from tqdm.auto import tqdm

    seed_everything(cfg.seed)
    model = Llama4(config)
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    hist = NeedleHistory([], [], 0.0)
    model.train()
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0):
        loss, ce, ce_ans = needle_loss(model, task.sample(cfg.batch_size, cfg.seq_len, g), answer_weight)
        optimizer_step(opt, loss, model, cfg.grad_clip, lr=lr_at(step, cfg))
        hist.loss.append(ce.item())
        hist.answer_loss.append(ce_ans.item())
    hist.seconds = time.perf_counter() - t0
    return model.eval(), hist


@torch.no_grad()
def loss_by_position(model: Llama4, ids: torch.Tensor, length: int, n_windows: int = 16,
                     batch_size: int = 8) -> torch.Tensor:
    """Mean next-token cross-entropy at each position 0 … length-1 (float32 [length]), over n_windows windows of
    `length` tokens spread evenly through the token stream `ids` (the same windows for every model)."""
    if ids.numel() < length + 1:
        raise ValueError(f"token stream of {ids.numel()} tokens is too short for windows of {length}")
    starts = torch.linspace(0, ids.numel() - length - 1, n_windows).long().tolist()
    total = torch.zeros(length)
    for i in range(0, n_windows, batch_size):
        s = starts[i:i + batch_size]
        x = torch.stack([ids[a:a + length] for a in s])
        y = torch.stack([ids[a + 1:a + length + 1] for a in s])
        logits = model(x)
        total += F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none").sum(0)
    return total / n_windows


@torch.no_grad()
def retrieval_accuracy(model: Llama4, task: NeedleTask, length: int, n_sequences: int = 64,
                       depth: float | None = None, seed: int = 1234, batch_size: int = 16) -> float:
    """Fraction of sequences whose whole passkey the model names after the query (top-1 at every key token, teacher
    forced), on n_sequences fresh sequences of `length` tokens with the query at the end and the needle at `depth`
    (None: anywhere). Seeded: every model sees the same sequences."""
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for i in range(0, n_sequences, batch_size):
        b = task.sample(min(batch_size, n_sequences - i), length, g, depth=depth, query_at_end=True)
        logits = model(b.ids)
        guess = logits.gather(1, b.answer_pos[..., None].expand(-1, -1, logits.shape[-1])).argmax(-1)  # [B, m]
        hits += int((guess == b.answers).all(-1).sum())  # one query per sequence: its m tokens
    return hits / n_sequences
