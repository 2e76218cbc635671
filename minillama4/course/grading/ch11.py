"""Chapter 11 cases: group-wise int4 quantize / dequantize, nibble packing, the int4 matmul and the bytes of an int4
model. Expected values come from the package: `quant.quantize_int4`, `quant.dequantize_int4`, `quant.pack_int4`,
`quant.unpack_int4`, `quant.Int4Linear` (the plain CPU layout) and `quant.expected_int4_bytes`. Below them, the
common wrong versions the grader recognises, with what it tells the learner."""

import torch

from ...config import Llama4Config
from ...quant import Int4Linear, dequantize_int4, expected_int4_bytes, pack_int4, quantize_int4, unpack_int4
from .core import Case, Exercise, Mistake, register
from .core import seeded as _g


def _weights():
    """(W [N, K], group size) pairs: Gaussian weights, several groups per row, an all-zero group and a row of tiny
    weights (the scale floor 1e-6), groups whose largest magnitude is positive (→ +8, clamped to 7) or negative
    (→ -8), a bfloat16 weight, and a heavy-tailed one with outliers."""
    ws = []
    for seed, (N, K, g) in enumerate([(4, 128, 128), (3, 256, 64), (6, 96, 32), (2, 512, 128)]):
        ws.append((torch.randn(N, K, generator=_g(100 + seed)) * 0.02, g))
    w = torch.randn(4, 64, generator=_g(110))
    w[1, :32] = 0.0  # an all-zero group: s = 1e-6, q = 0
    w[2, :] = 0.0  # a whole zero row
    w[0, 5], w[0, 40] = 10.0, -10.0  # a group whose extreme is positive, one whose extreme is negative
    w[3, 0:32] = torch.linspace(-1, 1, 32)  # exactly ±max in the same group: -8 and +7
    ws.append((w, 32))
    ws.append(((torch.randn(5, 128, generator=_g(111)) * 0.05).to(torch.bfloat16), 64))  # compute in float32
    ws.append((torch.randn(2, 64, generator=_g(114)) * 2e-6, 32))  # max|w| / 8 < 1e-6: the floor sets the scale
    heavy = torch.randn(8, 256, generator=_g(112)) * torch.rand(8, 256, generator=_g(113)).pow(-0.5) * 0.01  # outliers
    ws.append((heavy, 128))
    return ws


def _quantize_cases():
    return [Case((w, g), quantize_int4(w, g)) for w, g in _weights()]


def _dequantize_cases():
    cases = []
    for w, g in _weights():
        q, s = quantize_int4(w, g)
        cases.append(Case((q, s), dequantize_int4(q, s)))
    q = torch.randint(-8, 8, (3, 64), generator=_g(120), dtype=torch.int8)  # any q, any scales (one group per row)
    s = torch.rand(3, 1, generator=_g(121)) + 0.5
    cases.append(Case((q, s), dequantize_int4(q, s)))
    return cases


def _pack_cases():
    cases = []
    for seed, (N, K) in enumerate([(2, 8), (5, 128), (1, 2), (7, 34)]):
        q = torch.randint(-8, 8, (N, K), generator=_g(130 + seed)).to(torch.int8)
        cases.append(Case((q,), pack_int4(q)))
    for v in (-8, 7, 0):  # all lowest → 0x00, all highest → 0xFF, all zero → 0x88
        q = torch.full((2, 6), v, dtype=torch.int8)
        cases.append(Case((q,), pack_int4(q)))
    q = torch.tensor([[-8, 7, 7, -8, 0, -1, 1, -7]], dtype=torch.int8)  # which nibble is which
    cases.append(Case((q,), pack_int4(q)))
    return cases


def _unpack_cases():
    every_byte = torch.arange(256, dtype=torch.uint8).view(4, 64)
    cases = [Case((every_byte,), unpack_int4(every_byte))]
    for seed, (N, B) in enumerate([(3, 5), (8, 64), (1, 1)]):
        b = torch.randint(0, 256, (N, B), generator=_g(140 + seed)).to(torch.uint8)
        cases.append(Case((b,), unpack_int4(b)))
    q = torch.randint(-8, 8, (4, 32), generator=_g(145)).to(torch.int8)
    cases.append(Case((pack_int4(q),), q))  # the round trip
    return cases


def _linear_cases():
    cases = []
    for seed, (M, N, K, g) in enumerate([(1, 16, 128, 128), (5, 24, 256, 64), (3, 8, 64, 32), (2, 40, 256, 128)]):
        w = torch.randn(N, K, generator=_g(150 + seed)) * 0.05
        x = torch.randn(M, K, generator=_g(160 + seed))
        layer, _ = Int4Linear.from_float(w, g, layout="plain")
        with torch.no_grad():
            cases.append(Case((x, layer.qweight, layer.scales), layer(x)))
    return cases


def _bytes_cases():
    toy, scout, maverick = (Llama4Config.preset(n) for n in ("toy", "scout", "maverick"))
    cases = []
    for cfg, dtype_bytes, g, sb in [(scout, 2, 128, 4), (maverick, 2, 128, 4), (toy, 4, 128, 4), (toy, 2, 32, 2),
                                     (scout, 2, 64, 2), (toy.replace(moe_layers=[1, 3]), 4, 64, 4),
                                     (toy.replace(num_local_experts=8, num_hidden_layers=2, moe_layers=[0, 1],
                                                  no_rope_layers=[1, 0]), 2, 128, 4)]:
        cases.append(Case((cfg,), expected_int4_bytes(cfg, dtype_bytes, g, sb),
                          dict(dtype_bytes=dtype_bytes, group_size=g, scale_bytes=sb)))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch11.py holds independently written wrong learner files for each of them.
def _quantize(divisor=8.0, to_int=torch.round, magnitude=torch.abs):
    """Group-wise int4 with one thing changed: the divisor of the scale, the rounding, or max |w| → max w."""
    def wrong(w_NK, group_size):
        N, K = w_NK.shape
        w = w_NK.float().view(N, K // group_size, group_size)
        s = (magnitude(w).amax(-1) / divisor).clamp_min(1e-6)
        return to_int(w / s[..., None]).clamp(-8, 7).view(N, K).to(torch.int8), s
    return wrong


def _pair(got) -> bool:
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)


def _no_clamp(case, got) -> bool:
    return _pair(got) and bool((got[0] == 8).any())


def _no_scale_floor(case, got) -> bool:
    """Scales below the floor 1e-6 (0 for an all-zero group, max|w| / 8 for tiny weights)."""
    return _pair(got) and got[1].is_floating_point() and bool((got[1].nan_to_num(0.0) < 1e-6 * (1 - 1e-3)).any())


def _scales_per_column(case, got) -> bool:
    w, g = case.args
    return _pair(got) and got[1].shape[-1] == w.shape[1] != w.shape[1] // g


def _scale_per_row(case, got) -> bool:
    w, g = case.args
    return _pair(got) and w.shape[1] // g > 1 and tuple(got[1].shape) in ((w.shape[0], 1), (w.shape[0],))


def _in_bfloat16(case, got) -> bool:
    """Every float32 case passed; the bfloat16 weight does not: computed in bfloat16."""
    return case.args[0].dtype == torch.bfloat16


def _dequantize_per_column(q_NK, s_NG):
    """Weight k scaled by s[n, k % G] (s.repeat(1, g), or view(N, g, G)) instead of s[n, k // g]."""
    G = s_NG.shape[1]
    return q_NK.float() * s_NG.float().repeat(1, q_NK.shape[1] // G)


def _dequantize_divided(q_NK, s_NG):
    return q_NK.float() / s_NG.float().repeat_interleave(q_NK.shape[1] // s_NG.shape[1], dim=1)


def _offset(q):
    return (q.to(torch.int16) + 8).to(torch.uint8)


def _pack_swapped(q_NK):
    u = _offset(q_NK)
    return (u[:, 0::2] << 4) | u[:, 1::2]


def _pack_halves(q_NK):
    u = _offset(q_NK)
    K = u.shape[1]
    return u[:, :K // 2] | (u[:, K // 2:] << 4)


def _no_offset(case, got) -> bool:
    """Two's complement nibbles (q & 0xF), or q cast to uint8 without the + 8, packed in the right order."""
    q = case.args[0].to(torch.int16)
    if not isinstance(got, torch.Tensor) or got.shape != case.expected.shape:
        return False
    nib = (q & 0x0F).to(torch.uint8)
    raw = q.to(torch.uint8)
    candidates = [nib[:, 0::2] | (nib[:, 1::2] << 4), raw[:, 0::2] | (raw[:, 1::2] << 4)]
    return any(torch.equal(got.to(torch.uint8), c) for c in candidates)


def _unpack(order="lo-hi", offset=8, signed_shift=False, interleave=True):
    """Unpacking with one thing changed: the nibble order, the offset, a shift of signed bytes, or lo/hi
    concatenated instead of interleaved."""
    def wrong(packed):
        b = packed.view(torch.int8) if signed_shift else packed
        lo, hi = (b & 0x0F).to(torch.int16), (b >> 4).to(torch.int16)
        first, second = (lo, hi) if order == "lo-hi" else (hi, lo)
        q = torch.stack([first, second], -1).flatten(-2) if interleave else torch.cat([first, second], -1)
        return (q - offset).to(torch.int8)
    return wrong


def _unpack_twos_complement(packed):
    lo = (packed << 4).view(torch.int8) >> 4  # sign-extend the low nibble
    hi = packed.view(torch.int8) >> 4
    return torch.stack([lo, hi], -1).flatten(-2)


def _linear(unpack=unpack_int4, dequantize=dequantize_int4):
    def wrong(x_MK, packed, s_NG):
        return x_MK.float() @ dequantize(unpack(packed), s_NG).t()
    return wrong


def _transposed_output(case, got) -> bool:
    e = case.expected
    return isinstance(got, torch.Tensor) and got.shape == e.shape[::-1] and e.shape[0] != e.shape[1] and \
        torch.allclose(got.t().float(), e, atol=1e-4, rtol=1e-3)


def _bytes(routed_extra=1, layers=lambda c: len(c.moe_layers), weight_bytes=0.5, scales=True, subtract=True,
           scale_size=lambda dtype_bytes, scale_bytes: scale_bytes):
    """The int4 model's bytes with one thing changed: the shared expert, which layers are int4, the bytes of an int4
    weight, the scales (left out, or at dtype_bytes), or the int4 weights counted again in the rest."""
    def wrong(config, dtype_bytes=2, group_size=128, scale_bytes=4):
        D, F = config.hidden_size, config.intermediate_size
        matrices = layers(config) * (config.num_local_experts + routed_extra) * 3
        scale_cost = D * F // group_size * scale_size(dtype_bytes, scale_bytes) if scales else 0
        per_matrix = D * F * weight_bytes + scale_cost
        rest = config.num_parameters() - (matrices * D * F if subtract else 0)
        return int(matrices * per_matrix + rest * dtype_bytes)
    return wrong


_SHAPE_ERROR = r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"

register(Exercise(
    "quantize_groupwise", 11, "quantize_groupwise", _quantize_cases,
    "w.float().view(N, K // g, g); s = abs().amax(-1) / 8, clamp_min(1e-6); q = round(w / s[..., None]) "
    "clamped to [-8, 7], back to [N, K] as int8; s stays float32 [N, K // g]",
    nudge="Cut each row into groups of g consecutive weights. Which number of a group should land on the edge of "
          "the int4 range [-8, 7], and what happens to a group that is all zeros?",
    mistakes=[
        Mistake("q must be integers: round, clamp, then .to(torch.int8)",
                test=lambda case, got: _pair(got) and got[0].is_floating_point()),
        Mistake("your scales are per column: a scale belongs to g consecutive weights of one ROW (the input "
                "dimension), so s is [N, K // g]", test=_scales_per_column),
        Mistake("one scale per row is not enough: each group of g consecutive weights gets its own scale, "
                "s is [N, K // g] (view the row as [K // g, g])", test=_scale_per_row),
        Mistake("the scale is max |w| / 8 (the group's largest magnitude lands on ±8), not / 7",
                wrong=_quantize(divisor=7.0)),
        Mistake("the scale uses the largest MAGNITUDE, max |w| (.abs() first): a group whose extreme is negative "
                "needs it", wrong=_quantize(magnitude=lambda w: w)),
        Mistake("clamp q to [-8, 7]: with s = max|w| / 8 the largest positive weight rounds to 8, which int4 "
                "cannot hold", test=_no_clamp),
        Mistake("casting to int truncates toward 0: round to the nearest level with torch.round first",
                wrong=_quantize(to_int=torch.trunc)),
        Mistake("torch.floor rounds down: round to the nearest level with torch.round",
                wrong=_quantize(to_int=torch.floor)),
        Mistake("clamp the scale to at least 1e-6: an all-zero group would divide 0 by 0, and tiny weights need the "
                "floor too", test=_no_scale_floor),
        Mistake("compute in float32 (w.float() first): w / s rounded to bfloat16 can land on the other side of a "
                "rounding boundary, and the scales must be float32", test=_in_bfloat16),
    ]))
register(Exercise(
    "dequantize_groupwise", 11, "dequantize_groupwise", _dequantize_cases,
    "g = K // G; q.view(N, G, g).float() * s[..., None], then view(N, K): each scale multiplies its own "
    "g consecutive weights of one row (not a column)",
    nudge="Weight k of a row belongs to group k // g. How do you line the G scales up with the K weights so that "
          "each scale meets its own g consecutive weights?",
    mistakes=[
        Mistake("each scale must meet its own group: view q as [N, G, g] and multiply by s[..., None] (or "
                "s.repeat_interleave(g, dim=1)) (a broadcasting error)", raises=r"must match the size of tensor b"),
        Mistake("weight k uses s[n, k % G]: that is s.repeat (or view(N, g, G)); a scale covers g CONSECUTIVE "
                "weights, s[n, k // g]: view(N, G, g) or s.repeat_interleave(g, dim=1)",
                wrong=_dequantize_per_column),
        Mistake("dequantizing MULTIPLIES by the scale (Ŵ = q · s); quantizing divided by it",
                wrong=_dequantize_divided),
    ]))
register(Exercise(
    "pack_nibbles", 11, "pack_nibbles", _pack_cases,
    "u = (q.to(torch.int16) + 8).to(torch.uint8); byte = u[:, 0::2] | (u[:, 1::2] << 4): EVEN element "
    "in the LOW nibble", exact=True,
    nudge="A nibble holds 0..15 but q is in -8..7: what do you store? Then, of elements 2i and 2i + 1, which goes in "
          "the low four bits of byte i?",
    mistakes=[
        Mistake("the nibbles are swapped: element 2i goes in the LOW nibble, element 2i + 1 in the high one, "
                "byte = u[2i] | (u[2i + 1] << 4)", wrong=_pack_swapped),
        Mistake("you stored q itself (two's complement): store the offset u = q + 8, in [0, 15]", test=_no_offset),
        Mistake("byte i holds the neighbours 2i and 2i + 1 (u[:, 0::2] and u[:, 1::2]), not elements i and "
                "i + K/2", wrong=_pack_halves),
    ]))
register(Exercise(
    "unpack_nibbles", 11, "unpack_nibbles", _unpack_cases,
    "lo = b & 0x0F, hi = b >> 4; interleave with torch.stack([lo, hi], -1).flatten(-2) (lo first), then "
    ".to(torch.int8) - 8", exact=True,
    nudge="Each byte gives two values, low nibble first. How do you put lo0, hi0, lo1, hi1 … side by side, and what "
          "did packing add that you must take away?",
    mistakes=[
        Mistake("the nibbles come out swapped: element 2i is the LOW nibble (b & 0x0F), element 2i + 1 the high "
                "one (b >> 4)", wrong=_unpack(order="hi-lo")),
        Mistake("you forgot to subtract the offset: the nibbles hold q + 8, so q = nibble − 8",
                wrong=_unpack(offset=0)),
        Mistake("the nibbles are offset binary (q + 8), not two's complement: take each nibble as 0..15 and "
                "subtract 8, do not sign-extend it", wrong=_unpack_twos_complement),
        Mistake("you shifted a signed byte: int8 >> 4 copies the sign bit into the high nibble of bytes ≥ 128; shift "
                "the uint8 bytes as given", wrong=_unpack(signed_shift=True)),
        Mistake("interleave the nibbles (lo0, hi0, lo1, hi1 …: torch.stack([lo, hi], -1).flatten(-2)), do not "
                "concatenate all the low ones, then all the high ones", wrong=_unpack(interleave=False)),
    ]))
register(Exercise(
    "int4_linear", 11, "int4_linear", _linear_cases,
    "Ŵ = dequantize_groupwise(unpack_nibbles(packed), s); y = x.float() @ Ŵ.t() — Ŵ is [N, K] "
    "(out, in), so transpose it",
    nudge="Undo the storage first (nibbles → q → Ŵ), then it is an ordinary linear layer: what shape is Ŵ, and how "
          "does x [M, K] multiply it?",
    mistakes=[
        Mistake("Ŵ is [N, K] (out, in): y = x @ Ŵ.t() (a shape error in a matmul)", raises=_SHAPE_ERROR),
        Mistake("y = x Ŵᵀ is [M, N]: you computed Ŵ xᵀ, its transpose", test=_transposed_output),
        Mistake("the scales were left out: Ŵ = q · s, dequantize before the matmul",
                wrong=_linear(dequantize=lambda q, s: q.float())),
        Mistake("you forgot the offset: the nibbles hold q + 8, so subtract 8 after unpacking",
                wrong=_linear(unpack=_unpack(offset=0))),
        Mistake("the nibbles come out swapped: element 2i is the LOW nibble of byte i",
                wrong=_linear(unpack=_unpack(order="hi-lo"))),
        Mistake("each scale covers g consecutive weights of a row (s[n, k // g]), not every G-th one: dequantize "
                "with view(N, G, g) or repeat_interleave", wrong=_linear(dequantize=_dequantize_per_column)),
    ]))
register(Exercise(
    "int4_model_bytes", 11, "int4_model_bytes", _bytes_cases,
    "matrices = len(moe_layers) · (num_local_experts + 1) · 3; each costs D·F/2 + D·F/group_size · "
    "scale_bytes; the other num_parameters() − matrices·D·F weights cost dtype_bytes each (Maverick: "
    "only its MoE layers are int4)", exact=True,
    nudge="Count the int4 matrices first (which layers, which experts, how many per expert), then what one of them "
          "costs in bytes, then everything else at dtype_bytes.",
    mistakes=[
        Mistake("you forgot the scales: each group of group_size weights also stores one scale of scale_bytes",
                wrong=_bytes(scales=False)),
        Mistake("the shared expert is quantized too: num_local_experts + 1 experts per MoE layer",
                wrong=_bytes(routed_extra=0)),
        Mistake("only the MoE layers (config.moe_layers) are int4: Maverick's dense layers stay at dtype_bytes",
                wrong=_bytes(layers=lambda c: c.num_hidden_layers)),
        Mistake("an int4 weight is half a byte (D·F / 2 per matrix), not one byte", wrong=_bytes(weight_bytes=1)),
        Mistake("an int4 weight is 4 bits, which is half a BYTE: the result is in bytes", wrong=_bytes(weight_bytes=4)),
        Mistake("a scale costs scale_bytes, not dtype_bytes",
                wrong=_bytes(scale_size=lambda dtype_bytes, scale_bytes: dtype_bytes)),
        Mistake("the int4 weights are counted twice: the rest is num_parameters() minus the quantized weights",
                wrong=_bytes(subtract=False)),
    ]))
