"""Chapter 04 cases: RoPE (interleaved pairs), llama3 frequency scaling, chunked masks, temperature tuning, GQA.
Expected values come from the package's own functions (`minillama4.rope`, `minillama4.attention`).
Below them, the common wrong versions the grader recognises, with what it tells the learner."""

import math

import torch

from ...attention import Attention, attention_mask, temperature_scale
from ...config import Llama4Config
from ...rope import apply_rope, inverse_frequencies, rope_angles
from .core import seeded as _g, Case, Exercise, Mistake, compare_outputs, register


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


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch04.py holds independently written wrong learner files for each of them.
def _cos_sin(positions, inv_freq, layout: str):
    """cos and sin of p·ω per dimension [T, 1, Dh]: "pairs" gives dims 2i and 2i+1 the frequency ω_i (right for
    adjacent pairs), "halves" gives dims i and i + Dh/2 the frequency ω_i (rotate_half's cat(freqs, freqs))."""
    angles = positions[:, None].float() * inv_freq.float()[None, :]
    angles = angles.repeat_interleave(2, dim=-1) if layout == "pairs" else torch.cat([angles, angles], dim=-1)
    return angles.cos()[:, None, :], angles.sin()[:, None, :]


def _rotate_adjacent(x, cos, sin, sign=1.0):
    """x[2i], x[2i+1] → x[2i]·cos − x[2i+1]·sin, x[2i+1]·cos + x[2i]·sin (sign −1: the opposite rotation)."""
    xf = x.float()
    partner = torch.stack([-xf[..., 1::2], xf[..., 0::2]], dim=-1).flatten(-2)
    return (xf * cos + sign * partner * sin).to(x.dtype)


def _rope_rotate_half(x, positions, inv_freq):
    cos, sin = _cos_sin(positions, inv_freq, "halves")
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


def _rope_cat_frequencies(x, positions, inv_freq):
    return _rotate_adjacent(x, *_cos_sin(positions, inv_freq, "halves"))


def _rope_backwards(x, positions, inv_freq):
    return _rotate_adjacent(x, *_cos_sin(positions, inv_freq, "pairs"), sign=-1.0)


def _rope_from_zero(x, positions, inv_freq):
    return _rotate_adjacent(x, *_cos_sin(torch.arange(x.shape[1]), inv_freq, "pairs"))


def _angles_in_float64(case, got) -> bool:
    """The rotation done in float64: exact angles p·ω, where the reference rounds them to float32 (off by up to
    ~5e-4 rad at position 8190)."""
    x, positions, inv_freq = case.args
    angles = positions[:, None].double() * inv_freq.double()[None, :]
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    exact = torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)[:, None, :]).flatten(3)
    return compare_outputs(got, exact.to(x.dtype), False)[0]


def _rounded_in_low_precision(case, got) -> bool:
    """A low-precision input whose result is right to a few bfloat16 steps, but not to the bit: the rotation was
    computed (partly) in bfloat16 instead of float32."""
    x = case.args[0]
    return (x.dtype != torch.float32 and got.dtype == x.dtype and not torch.equal(got, case.expected)
            and torch.allclose(got.float(), case.expected.float(), rtol=2e-2, atol=2e-2))


def _llama3_variant(half_exponent=False, wavelength_without_2pi=False, reversed_blend=False, short_slowed=False,
                    unscaled_when_equal=False):
    def wrong(head_dim, theta, factor, low, high, L):
        i = torch.arange(head_dim // 2).float() if half_exponent else torch.arange(0, head_dim, 2).float()
        inv = 1.0 / theta ** (i / head_dim)
        if unscaled_when_equal and high == low:
            return inv
        lam = 1.0 / inv if wavelength_without_2pi else 2 * math.pi / inv
        slow = lam < L / high if short_slowed else lam > L / low
        out = torch.where(slow, inv / factor, inv)
        if high > low:
            s = (L / lam - low) / (high - low)
            blended = s * inv / factor + (1 - s) * inv if reversed_blend else (1 - s) * inv / factor + s * inv
            out = torch.where((lam >= L / high) & (lam <= L / low), blended, out)
        return out
    return wrong


def _mask_variant(strict=False, shifted_chunks=False, indices=False, transposed=False, no_causal=False):
    def wrong(q_pos, k_pos, C):
        if indices:
            q_pos, k_pos = torch.arange(len(q_pos)), torch.arange(len(k_pos))
        p, s = q_pos[:, None], k_pos[None, :]
        allowed = torch.ones(len(q_pos), len(k_pos), dtype=torch.bool) if no_causal else (s < p if strict else s <= p)
        if C is not None:
            allowed = allowed & ((s + 1) // C == (p + 1) // C if shifted_chunks else s // C == p // C)
        return allowed.t() if transposed else allowed
    return wrong


def _sliding_window(case, got) -> bool:
    """The last W keys before each query (W = C − 1, C or C + 1), not the fixed block of multiples of C."""
    q_pos, k_pos, C = case.args
    if C is None:
        return False
    d = q_pos[:, None] - k_pos[None, :]
    return any(torch.equal(got, (d >= 0) & (d < w)) for w in (C - 1, C, C + 1))


def _temperature_variant(plus_one=True, log1p=True, one_plus=True):
    def wrong(positions, floor_scale, attn_scale):
        steps = torch.floor((positions.float() + (1.0 if plus_one else 0.0)) / floor_scale)
        scale = attn_scale * (torch.log1p(steps) if log1p else torch.log(steps))
        return 1.0 + scale if one_plus else scale
    return wrong


def _gqa_variant(repeat=False, scale="sqrt", mask="-inf", softmax_dim=-1):
    def wrong(q, k, v, mask_TS):
        g = q.shape[1] // k.shape[1]
        k, v = (k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)) if repeat else \
            (k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1))
        Dh = q.shape[-1]
        scores = (q @ k.transpose(-1, -2)) * {"sqrt": Dh ** -0.5, "none": 1.0, "Dh": 1.0 / Dh}[scale]
        if mask == "-inf":
            scores = scores.masked_fill(~mask_TS, float("-inf"))
        elif mask == "inverted":
            scores = scores.masked_fill(mask_TS, float("-inf"))
        elif mask == "zero":
            scores = scores.masked_fill(~mask_TS, 0.0)
        elif mask == "added":
            scores = scores + mask_TS
        return scores.softmax(dim=softmax_dim) @ v
    return wrong


register(Exercise(
    "apply_rope", 4, "apply_rope", _rope_cases,
    "pair ADJACENT dimensions: x.float().reshape(..., Dh//2, 2) → torch.view_as_complex; multiply by "
    "torch.polar(1, positions[:, None] * inv_freq) broadcast over batch and heads; view_as_real, flatten, cast back. "
    "Not rotate_half (i with i + Dh/2).",
    nudge="Which two dimensions form a pair in Llama 4, and which frequency does pair i turn at? Rotating the pair "
          "(x[0], x[1]) of position 1 by hand is a good first test.",
    mistakes=[
        Mistake("you paired dimension i with i + Dh/2 (rotate_half, the Llama 2/3 convention of transformers): "
                "Llama 4 rotates ADJACENT pairs (x[2i], x[2i+1])", wrong=_rope_rotate_half),
        Mistake("your cos/sin are laid out as cat(freqs, freqs) (rotate_half's layout): with adjacent pairs, "
                "dimensions 2i and 2i+1 share the frequency ω_i, so repeat_interleave(2) the angles",
                wrong=_rope_cat_frequencies),
        Mistake("you rotated by −p·ω (or read the pair as x[2i+1] + j·x[2i]): z_i = x[2i] + j·x[2i+1] is multiplied "
                "by e^{+j p ω_i}", wrong=_rope_backwards),
        Mistake("use the positions you are given: they are absolute and need not start at 0 or be consecutive, "
                "not arange(T)", wrong=_rope_from_zero),
        Mistake("return the result in x's dtype: compute in float32, then cast back (.to(x.dtype))",
                test=lambda case, got: got.dtype != case.args[0].dtype),
        Mistake("compute the angles p·ω in float32, as the reference and Llama 4's own code do: float64 angles are "
                "more exact, but at positions in the thousands they differ from the float32 ones the model was "
                "trained with", test=_angles_in_float64),
        Mistake("right up to bfloat16 rounding: compute the whole rotation in float32 (x.float()) and round only "
                "the result back to x's dtype", test=_rounded_in_low_precision),
    ]))
register(Exercise(
    "llama3_inverse_frequencies", 4, "llama3_inverse_frequencies", _llama3_cases,
    "ω = 1/θ^(arange(0, Dh, 2)/Dh) in float32; wavelength 2π/ω; divide by factor where the wavelength exceeds L/low; "
    "blend only where L/high ≤ wavelength ≤ L/low, and only if high > low",
    compare=_relative,
    nudge="Print the wavelength 2π/ω of every pair next to L/high and L/low: which pairs are slowed down, which are "
          "blended, and what is left of the blend when low == high?",
    mistakes=[
        Mistake("when low_freq_factor == high_freq_factor the smooth band is empty: skip the blend instead of "
                "dividing by high − low = 0 (the long wavelengths are still divided by factor)",
                raises=r"ZeroDivisionError"),
        Mistake("when low_freq_factor == high_freq_factor the smooth band is empty: skip the blend instead of "
                "dividing by high − low = 0 (a 0/0 or x/0 reached your result)",
                test=lambda case, got: not torch.isfinite(got).all()),
        Mistake("with low == high there is still scaling: the long wavelengths (λ > L/low) are divided by factor; "
                "only the smooth band is empty", wrong=_llama3_variant(unscaled_when_equal=True)),
        Mistake("ω_i = θ^(−2i/Dh): the exponent steps by 2/Dh, arange(0, Dh, 2) / Dh, not arange(Dh/2) / Dh",
                wrong=_llama3_variant(half_exponent=True)),
        Mistake("the wavelength is 2π/ω (tokens per full turn), not 1/ω", wrong=_llama3_variant(
            wavelength_without_2pi=True)),
        Mistake("divide the LONG wavelengths (λ > L/low) by factor, not the short ones: fast pairs stay as they are",
                wrong=_llama3_variant(short_slowed=True)),
        Mistake("the blend is reversed: s = 0 at the long edge of the band gives ω/factor, s = 1 at the short edge "
                "gives ω: (1 − s)·ω/factor + s·ω", wrong=_llama3_variant(reversed_blend=True)),
    ]))
register(Exercise(
    "chunked_causal_mask", 4, "chunked_causal_mask", _mask_cases,
    "compare k_pos[None, :] with q_pos[:, None]: causal is s ≤ p; same chunk is s // C == p // C (fixed blocks, not a "
    "window of the last C tokens); chunk_size None → causal only", exact=True,
    nudge="Draw the mask for 10 positions and C = 4: which keys may position 4 see, and which may position 7? "
          "Rows are queries, columns keys, and both are absolute positions.",
    mistakes=[
        Mistake("chunk_size None means a NoPE layer: plain causal mask, no chunk test (check chunk_size is not None)",
                raises=r"NoneType"),
        Mistake("rows are queries and columns keys: build it from q_pos[:, None] and k_pos[None, :], [Tq, Tk]",
                wrong=_mask_variant(transposed=True)),
        Mistake("a query may attend to its own position: causal is s ≤ p, not s < p", wrong=_mask_variant(strict=True)),
        Mistake("inside a chunk attention is still causal: also require s ≤ p", wrong=_mask_variant(no_causal=True)),
        Mistake("your chunk boundaries are off by one: chunks are the 0-based positions s // C == p // C (the token "
                "at C starts a new chunk and sees only itself)", wrong=_mask_variant(shifted_chunks=True)),
        Mistake("that is a sliding window over the last C tokens: chunks are FIXED blocks [nC, (n+1)C), a key is "
                "allowed only when s // C == p // C", test=_sliding_window),
        Mistake("compare the absolute positions q_pos and k_pos, not row and column indices (a continuation's "
                "queries start later than its keys)", wrong=_mask_variant(indices=True)),
    ]))
register(Exercise(
    "temperature_scale", 4, "temperature_scale", _temperature_cases,
    "1 + attn_scale * log1p(floor((p + 1) / floor_scale)) in float32: the +1 goes inside the floor, so position "
    "floor_scale - 1 is the first one scaled",
    nudge="Evaluate the formula by hand at p = floor_scale − 2 and p = floor_scale − 1: which is the first position "
          "whose scale is not 1?",
    mistakes=[
        Mistake("return float32, one scale per position (compute in float32: positions.float())",
                test=lambda case, got: got.dtype != torch.float32),
        Mistake("the +1 goes inside the floor: ⌊(p + 1)/floor_scale⌋, so position floor_scale − 1 (8191 in Llama 4) "
                "is the first one scaled, not floor_scale", wrong=_temperature_variant(plus_one=False)),
        Mistake("ln(⌊…⌋ + 1): without the + 1 the positions before the first step give ln 0 = −inf "
                "(torch.log1p adds it for you)", wrong=_temperature_variant(log1p=False)),
        Mistake("the scale is 1 + attn_scale · ln(…): without the 1, the early queries would be multiplied by 0",
                wrong=_temperature_variant(one_plus=False)),
    ]))
register(Exercise(
    "gqa_attention", 4, "gqa_attention", _gqa_cases,
    "query head h reads kv head h // (H/K): repeat_interleave(H // K, dim=1), not repeat (which would give h % K); "
    "scale q kᵀ by 1/√Dh, fill the scores where the mask is False with -inf, softmax over the keys (last dim)",
    nudge="With H = 8 and K = 2, list which kv head each query head reads (0, 0, 0, 0, 1, …?), then check what your "
          "expansion of k gives. And what does the mask's True mean?",
    mistakes=[
        Mistake("k and v have only K heads: expand them to H first, repeat_interleave(H // K, dim=1) (a size error "
                "in the matmul)", raises=r"must match the size of tensor .* at non-singleton dimension 1"),
        Mistake("kv heads were tiled with repeat (query head h reads kv head h % K): Llama 4 groups them, h reads "
                "kv head h // (H/K): use repeat_interleave", wrong=_gqa_variant(repeat=True)),
        Mistake("scale the scores q kᵀ by 1/√Dh before the softmax", wrong=_gqa_variant(scale="none")),
        Mistake("scale the scores by 1/√Dh, not 1/Dh", wrong=_gqa_variant(scale="Dh")),
        Mistake("the mask is True where attention is ALLOWED: fill the scores where it is False (~mask) with -inf",
                wrong=_gqa_variant(mask="inverted")),
        Mistake("masked scores set to 0 still get weight e⁰ in the softmax: fill them with -inf",
                wrong=_gqa_variant(mask="zero")),
        Mistake("a boolean mask added to the scores adds 1 or 0, it blocks nothing: masked_fill(~mask, -inf)",
                wrong=_gqa_variant(mask="added")),
        Mistake("the softmax runs over the keys (last dim), each query's weights summing to 1",
                wrong=_gqa_variant(softmax_dim=-2)),
    ]))
