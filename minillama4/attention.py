"""Llama 4 attention: GQA with two kinds of layer (iRoPE).

RoPE layers (3 of every 4):  RoPE on q, k  →  QK-norm (weightless RMS, if use_qk_norm)  →  *chunked* causal mask:
    query p may see key s  iff  s ≤ p  and  ⌊s / C⌋ = ⌊p / C⌋          (block-diagonal, not a sliding window)
NoPE layers (every 4th):     no position encoding at all  →  global causal mask  →  temperature tuning of q:
    q ← q · (1 + attn_scale · ln(⌊(p + 1) / floor_scale⌋ + 1))

Then, in both:  softmax(q kᵀ / √Dh + mask) v,  query head h reads kv head ⌊h / (H/K)⌋.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import Llama4Config
from .norm import rms_norm
from .rope import apply_rope


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Boolean [Tq, Tk]: True where query position q_pos[i] may attend to key position k_pos[j]."""
    allowed = k_pos[None, :] <= q_pos[:, None]  # causal: s ≤ p
    if chunk_size is not None:
        allowed &= (k_pos[None, :] // chunk_size) == (q_pos[:, None] // chunk_size)  # same chunk
    return allowed


def temperature_scale(positions: torch.Tensor, floor_scale: int, attn_scale: float) -> torch.Tensor:
    """Query scale per position for NoPE layers: 1 + attn_scale · ln(⌊(p+1)/floor_scale⌋ + 1), float32.
    Equals 1 for p < floor_scale - 1; with Llama 4's values the first token it changes is p = 8191."""
    return torch.log1p(torch.floor((positions.float() + 1.0) / floor_scale)) * attn_scale + 1.0


class Attention(nn.Module):
    def __init__(self, config: Llama4Config, layer_idx: int):
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.use_rope = c.uses_rope(layer_idx)
        self.chunk_size = c.attention_chunk_size if self.use_rope else None  # NoPE layers attend globally
        self.qk_norm_eps = c.rms_norm_eps if (c.use_qk_norm and self.use_rope) else None
        self.temperature = (c.floor_scale, c.attn_scale) if (c.attn_temperature_tuning and not self.use_rope) else None
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=False)  # Wq [H·Dh, D]
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)  # Wk [K·Dh, D]
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)  # Wv [K·Dh, D]
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)  # Wo [D, H·Dh]

    def forward(self, x_BTD: torch.Tensor, freqs_TP: torch.Tensor, positions_T: torch.Tensor, cache=None,
                return_weights: bool = False):
        B, T, _ = x_BTD.shape
        q_BTHD = self.q_proj(x_BTD).view(B, T, self.n_heads, self.head_dim)
        k_BTKD = self.k_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim)
        v_BTKD = self.v_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim)
        if self.use_rope:
            q_BTHD, k_BTKD = apply_rope(q_BTHD, freqs_TP), apply_rope(k_BTKD, freqs_TP)
        if self.qk_norm_eps is not None:  # after RoPE, per head, no learned scale
            q_BTHD, k_BTKD = rms_norm(q_BTHD, self.qk_norm_eps), rms_norm(k_BTKD, self.qk_norm_eps)
        if self.temperature is not None:  # queries only, by absolute position
            s_T = temperature_scale(positions_T, *self.temperature)
            q_BTHD = (q_BTHD * s_T[None, :, None, None]).to(q_BTHD.dtype)

        q_BHTD, k_BKSD, v_BKSD = q_BTHD.transpose(1, 2), k_BTKD.transpose(1, 2), v_BTKD.transpose(1, 2)
        k_pos_S = positions_T
        if cache is not None:  # prepend what this layer kept from earlier calls (RoPE layers: current chunk only)
            k_BKSD, v_BKSD, k_pos_S = cache.update(self.layer_idx, k_BKSD, v_BKSD, positions_T)
        every_slot = getattr(cache, "static", False)  # a compiled decode step reads all slots: mask them

        if return_weights:
            out_BHTD, w_BHTS = self._eager(q_BHTD, k_BKSD, v_BKSD, attention_mask(positions_T, k_pos_S, self.chunk_size))
        else:
            out_BHTD, w_BHTS = self._sdpa(q_BHTD, k_BKSD, v_BKSD, positions_T, k_pos_S, every_slot), None
        out = self.o_proj(out_BHTD.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
        return (out, w_BHTS) if return_weights else out

    def _sdpa(self, q_BHTD, k_BKSD, v_BKSD, q_pos, k_pos, every_slot: bool = False):
        T, S = q_BHTD.shape[2], k_BKSD.shape[2]
        if every_slot:
            mask, causal = attention_mask(q_pos, k_pos, self.chunk_size), False
        elif T == 1:  # decode: every kept key is in the past and (RoPE layers) in the current chunk
            mask, causal = None, False
        elif T == S and (self.chunk_size is None or q_pos[0] // self.chunk_size == q_pos[-1] // self.chunk_size):
            mask, causal = None, True  # plain causal over a fresh span inside one chunk
        else:
            mask, causal = attention_mask(q_pos, k_pos, self.chunk_size), False
        return F.scaled_dot_product_attention(q_BHTD, k_BKSD, v_BKSD, attn_mask=mask, is_causal=causal,
                                              enable_gqa=self.n_heads != self.n_kv_heads)

    def _eager(self, q_BHTD, k_BKSD, v_BKSD, mask_TS):
        """Explicit softmax(q kᵀ/√Dh + mask) v, returning the attention weights (for pictures)."""
        g = self.n_heads // self.n_kv_heads
        k_BHSD, v_BHSD = k_BKSD.repeat_interleave(g, dim=1), v_BKSD.repeat_interleave(g, dim=1)  # head h ← kv h // g
        scores = (q_BHTD @ k_BHSD.transpose(-1, -2)) * self.head_dim ** -0.5
        w_BHTS = scores.masked_fill(~mask_TS, float("-inf")).softmax(-1)
        return w_BHTS @ v_BHSD, w_BHTS
