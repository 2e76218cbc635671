"""Choosing the next token from the logits: greedy, temperature, nucleus (top-p)."""

import math
import numbers

import torch


def check_sampling(temperature: float, top_p: float) -> None:
    """Raise ValueError unless temperature is a finite number >= 0 and top_p lies in (0, 1]."""
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:  # (NaN fails the comparison too)
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def top_p_filter(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least top_p; zero the rest and
    renormalise. The most likely token always stays."""
    p_sorted, order = probs_BV.sort(-1, descending=True)
    drop = p_sorted.cumsum(-1) - p_sorted >= top_p  # mass strictly before this token already reaches top_p
    p_sorted = p_sorted.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs_BV).scatter_(-1, order, p_sorted)
    return kept / kept.sum(-1, keepdim=True)


def sample_next_token(logits_BV: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """temperature 0 → argmax. Otherwise sample from softmax(logits / temperature), restricted to the smallest set
    of most likely tokens whose probability adds up to at least top_p. Returns token ids [B]."""
    check_sampling(temperature, top_p)
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs_BV = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p < 1:
        probs_BV = top_p_filter(probs_BV, top_p)
    return torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)
