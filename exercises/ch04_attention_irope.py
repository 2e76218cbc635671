# GENERATED from solutions/ch04_attention_irope.py by scripts/make_exercises.py (stub ace9c32144c6): this is your file, fill in the stubs.
"""Chapter 04 exercises: the pieces of Llama 4's attention (iRoPE).

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 4`. Shapes: B batch, T query positions, S key
positions, H query heads, K key/value heads, Dh head width, P = Dh/2 rotation pairs.
"""

import math

import torch


def apply_rope(x_BTHD: torch.Tensor, positions_T: torch.Tensor, inv_freq_P: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding as Llama 4 applies it: read each head vector as Dh/2 complex numbers made of
    *adjacent* pairs, z_i = x[2i] + j·x[2i+1], and rotate pair i of the token at position p by the angle p·ω_i:

        z_i ← z_i · e^{j p ω_i}          (ω_i = inv_freq_P[i])

    x_BTHD [B, T, H, Dh], positions_T [T] (absolute positions, not necessarily starting at 0), inv_freq_P [Dh/2].
    Compute in float32 (angles too) and return the result in x's dtype. Not the "rotate_half" convention of
    Llama 2/3 in transformers, which pairs dimension i with i + Dh/2."""
    # YOUR CODE HERE
    raise NotImplementedError()


def llama3_inverse_frequencies(head_dim: int, theta: float, factor: float, low_freq_factor: float,
                               high_freq_factor: float, original_max_position_embeddings: int) -> torch.Tensor:
    """RoPE frequencies ω_i = θ^(-2i/Dh), i = 0 … Dh/2-1 (float32), stretched by llama3 scaling:

        λ_i = 2π / ω_i                                              (wavelength, in tokens)
        λ_i < L / high_freq_factor                     →  ω_i                    (short wavelengths: unchanged)
        λ_i > L / low_freq_factor                      →  ω_i / factor           (long wavelengths: slowed down)
        otherwise (the smooth band)                    →  (1 - s)·ω_i/factor + s·ω_i,
                                                          s = (L/λ_i - low_freq_factor) / (high_freq_factor - low_freq_factor)

    with L = original_max_position_embeddings. When low_freq_factor == high_freq_factor (Scout: 16 / 1 / 1) the smooth
    band is empty: never divide by high - low = 0."""
    # YOUR CODE HERE
    raise NotImplementedError()


def chunked_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Boolean [Tq, Tk]: True where the query at absolute position q_pos[i] may attend to the key at k_pos[j].

        allowed(p, s) = s ≤ p  and  ⌊s / C⌋ = ⌊p / C⌋          (C = chunk_size)

    Block-diagonal causal, with chunk boundaries fixed at multiples of C: *not* a sliding window (the token at
    position C sees only itself). chunk_size None means plain causal attention over everything (NoPE layers)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def temperature_scale(positions: torch.Tensor, floor_scale: int, attn_scale: float) -> torch.Tensor:
    """The factor NoPE layers multiply their queries by (attention temperature tuning), float32, one per position:

        s(p) = 1 + attn_scale · ln(⌊(p + 1) / floor_scale⌋ + 1)

    p is the 0-based absolute position. Mind the +1 inside the floor: with Llama 4's floor_scale = 8192 the first
    position whose scale is not 1 is p = 8191, not 8192."""
    # YOUR CODE HERE
    raise NotImplementedError()


def gqa_attention(q_BHTD: torch.Tensor, k_BKSD: torch.Tensor, v_BKSD: torch.Tensor,
                  mask_TS: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention: H query heads share K key/value heads, H/K queries per kv head.

        out_h = softmax(q_h k_gᵀ / √Dh + M) v_g,      g = ⌊h / (H/K)⌋   (heads 0 … H/K-1 read kv head 0, …)

    mask_TS is boolean (True = may attend; every row has at least one True). Returns [B, H, T, Dh].
    Do it without a Python loop over heads."""
    # YOUR CODE HERE
    raise NotImplementedError()
