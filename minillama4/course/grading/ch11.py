"""Chapter 11 cases: group-wise int4 quantize / dequantize, nibble packing, the int4 matmul and the bytes of an int4
model. Expected values come from the package: `quant.quantize_int4`, `quant.dequantize_int4`, `quant.pack_int4`,
`quant.unpack_int4`, `quant.Int4Linear` (the plain CPU layout) and `quant.expected_int4_bytes`."""

import torch

from ...config import Llama4Config
from ...quant import Int4Linear, dequantize_int4, expected_int4_bytes, pack_int4, quantize_int4, unpack_int4
from .core import Case, Exercise, register
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


register(Exercise("quantize_groupwise", 11, "quantize_groupwise", _quantize_cases,
                  "w.float().view(N, K // g, g); s = abs().amax(-1) / 8, clamp_min(1e-6); q = round(w / s[..., None]) "
                  "clamped to [-8, 7], back to [N, K] as int8; s stays float32 [N, K // g]"))
register(Exercise("dequantize_groupwise", 11, "dequantize_groupwise", _dequantize_cases,
                  "g = K // G; q.view(N, G, g).float() * s[..., None], then view(N, K): each scale multiplies its own "
                  "g consecutive weights of one row (not a column)"))
register(Exercise("pack_nibbles", 11, "pack_nibbles", _pack_cases,
                  "u = (q.to(torch.int16) + 8).to(torch.uint8); byte = u[:, 0::2] | (u[:, 1::2] << 4): EVEN element "
                  "in the LOW nibble", exact=True))
register(Exercise("unpack_nibbles", 11, "unpack_nibbles", _unpack_cases,
                  "lo = b & 0x0F, hi = b >> 4; interleave with torch.stack([lo, hi], -1).flatten(-2) (lo first), then "
                  ".to(torch.int8) - 8", exact=True))
register(Exercise("int4_linear", 11, "int4_linear", _linear_cases,
                  "Ŵ = dequantize_groupwise(unpack_nibbles(packed), s); y = x.float() @ Ŵ.t() — Ŵ is [N, K] "
                  "(out, in), so transpose it"))
register(Exercise("int4_model_bytes", 11, "int4_model_bytes", _bytes_cases,
                  "matrices = len(moe_layers) · (num_local_experts + 1) · 3; each costs D·F/2 + D·F/group_size · "
                  "scale_bytes; the other num_parameters() − matrices·D·F weights cost dtype_bytes each (Maverick: "
                  "only its MoE layers are int4)", exact=True))
