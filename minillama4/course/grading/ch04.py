"""Chapter 04 cases: RoPE (interleaved pairs), llama3 frequency scaling, chunked masks, temperature tuning, GQA.
Expected values come from the package's own functions (`minillama4.rope`, `minillama4.attention`)."""

import torch

from ...attention import Attention, attention_mask, temperature_scale
from ...config import Llama4Config
from ...rope import apply_rope, inverse_frequencies, rope_angles
from .core import seeded as _g, Case, Exercise, register



def _rope_cases():
    cases = []
    # (B, T, H, Dh, first position, theta, dtype): positions far from 0 catch code that ignores them; the bfloat16
    # case checks that the rotation happens in float32 and only the result is cast back
    for seed, (B, T, H, Dh, p0, theta, dtype) in enumerate([
        (2, 5, 3, 8, 0, 10000.0, torch.float32),
        (1, 7, 2, 16, 1000, 500000.0, torch.float32),
        (2, 4, 4, 32, 8190, 10000.0, torch.float32),
        (1, 6, 2, 16, 37, 10000.0, torch.bfloat16),
    ]):
        x = (torch.randn(B, T, H, Dh, generator=_g(seed)) * 2).to(dtype)
        positions = torch.arange(p0, p0 + T)
        inv_freq = inverse_frequencies(Dh, theta)
        cases.append(Case((x, positions, inv_freq), apply_rope(x, rope_angles(positions, inv_freq))))
    # positions that are not consecutive (e.g. a decode step, or packed sequences)
    x = torch.randn(1, 4, 2, 8, generator=_g(9))
    positions, inv_freq = torch.tensor([3, 0, 17, 9]), inverse_frequencies(8, 100.0)
    cases.append(Case((x, positions, inv_freq), apply_rope(x, rope_angles(positions, inv_freq))))
    return cases


# (head_dim, theta, factor, low, high, original_max_position_embeddings)
_LLAMA3 = [
    (128, 500000.0, 16.0, 1.0, 1.0, 8192),  # Scout today: low == high, no smooth band
    (128, 500000.0, 8.0, 1.0, 4.0, 8192),  # Scout at release (the Llama 3.1 values): 6 pairs in the smooth band
    (32, 10000.0, 4.0, 1.0, 4.0, 64),  # toy sizes: a wide smooth band
    (64, 10000.0, 2.0, 2.0, 2.0, 128),  # low == high again, with low != 1
]


def _llama3_cases():
    return [Case((dh, theta, factor, low, high, old),
                 inverse_frequencies(dh, theta, {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                                 "high_freq_factor": high, "original_max_position_embeddings": old}))
            for dh, theta, factor, low, high, old in _LLAMA3]


def _relative(got, expected):
    """Relative error per frequency: the slowest frequencies are ~1e-7, far below an absolute tolerance."""
    if not isinstance(got, torch.Tensor):
        return False, float("inf"), f"returned {type(got).__name__}, expected a tensor"
    if got.shape != expected.shape:
        return False, float("inf"), f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if not torch.isfinite(got).all():
        return False, float("inf"), "non-finite values (a division by high - low = 0?)"
    rel_i = (got.double() - expected.double()).abs() / expected.double().abs()
    rel = rel_i.max().item()
    if rel > 1e-5:
        bad = int((rel_i > 1e-5).nonzero()[0])
        return False, rel, (f"relative error {rel:.3g}; first wrong pair i={bad}: got {float(got[bad]):.6g}, "
                            f"expected {float(expected[bad]):.6g}")
    return True, rel, ""


def _mask_cases():
    cases = []
    for q_pos, k_pos, chunk in [
        (torch.arange(20), torch.arange(20), 8),  # a prefill spanning three chunks
        (torch.arange(20), torch.arange(20), None),  # NoPE layer: plain causal
        (torch.arange(13, 21), torch.arange(0, 21), 8),  # a continuation: new queries, cached + new keys
        (torch.tensor([8192]), torch.arange(8185, 8193), 8192),  # decode at the first token of Scout's second chunk
        (torch.arange(30, 36), torch.arange(24, 36), 5),  # chunk size that does not divide the positions
    ]:
        cases.append(Case((q_pos, k_pos, chunk), attention_mask(q_pos, k_pos, chunk)))
    return cases


def _temperature_cases():
    scout = torch.tensor([0, 1, 8189, 8190, 8191, 8192, 16382, 16383, 24575, 65535, 1_000_000, 10_485_759])
    rand = torch.randint(0, 100_000, (50,), generator=_g(4))
    return [Case((p, f, s), temperature_scale(p, f, s)) for p, f, s in [
        (torch.arange(40), 8, 0.1),  # first scaled position: 7
        (scout, 8192, 0.1),  # Llama 4's values
        (rand, 1000, 0.25),
        (torch.arange(10), 1, 0.5),  # floor_scale 1: every position scaled
    ]]


def _gqa_cases():
    cases = []
    for seed, (B, H, K, T, Dh, chunk) in enumerate([(2, 8, 2, 6, 8, None), (1, 6, 3, 9, 16, 4), (1, 4, 4, 5, 8, None),
                                                     (2, 4, 1, 7, 8, 3)]):
        c = Llama4Config.preset("toy").replace(num_attention_heads=H, num_key_value_heads=K, head_dim=Dh,
                                               hidden_size=H * Dh)
        attn = Attention(c, layer_idx=0)
        q = torch.randn(B, H, T, Dh, generator=_g(20 + seed)) * 2
        k = torch.randn(B, K, T, Dh, generator=_g(30 + seed)) * 2
        v = torch.randn(B, K, T, Dh, generator=_g(40 + seed))
        mask = attention_mask(torch.arange(T), torch.arange(T), chunk)
        out, _ = attn._eager(q, k, v, mask)
        cases.append(Case((q, k, v, mask), out))
    return cases


register(Exercise("apply_rope", 4, "apply_rope", _rope_cases,
                  "pair ADJACENT dimensions: x.float().reshape(..., Dh//2, 2) → torch.view_as_complex; multiply by "
                  "torch.polar(1, positions[:, None] * inv_freq) broadcast over batch and heads; view_as_real, "
                  "flatten, cast back. Not rotate_half (i with i + Dh/2)."))
register(Exercise("llama3_inverse_frequencies", 4, "llama3_inverse_frequencies", _llama3_cases,
                  "ω = 1/θ^(arange(0, Dh, 2)/Dh) in float32; wavelength 2π/ω; divide by factor where the wavelength "
                  "exceeds L/low; blend only where L/high ≤ wavelength ≤ L/low, and only if high > low",
                  compare=_relative))
register(Exercise("chunked_causal_mask", 4, "chunked_causal_mask", _mask_cases,
                  "compare k_pos[None, :] with q_pos[:, None]: causal is s ≤ p; same chunk is s // C == p // C "
                  "(fixed blocks, not a window of the last C tokens); chunk_size None → causal only",
                  exact=True))
register(Exercise("temperature_scale", 4, "temperature_scale", _temperature_cases,
                  "1 + attn_scale * log1p(floor((p + 1) / floor_scale)) in float32: the +1 goes inside the floor, "
                  "so position floor_scale - 1 is the first one scaled"))
register(Exercise("gqa_attention", 4, "gqa_attention", _gqa_cases,
                  "query head h reads kv head h // (H/K): repeat_interleave(H // K, dim=1), not repeat (which would "
                  "give h % K); scale q kᵀ by 1/√Dh, fill masked scores with -inf before the softmax"))
