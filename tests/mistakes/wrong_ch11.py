"""Chapter 11: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "quantize_groupwise": [
        ("q-left-as-float", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, -1, group_size)
    s = (w.abs().max(dim=-1).values / 8).clamp(min=1e-6)
    q = torch.clamp(torch.round(w / s.unsqueeze(-1)), -8, 7)
    return q.reshape(N, K), s
''', ["int8"]),
        ("scales-per-column", '''
def quantize_groupwise(w_NK, group_size):
    w = w_NK.float()
    s = (w.abs().amax(dim=0) / 8).clamp(min=1e-6)
    q = torch.round(w / s).clamp(-8, 7).to(torch.int8)
    return q, s
''', ["per column", "ROW"]),
        ("one-scale-per-row", '''
def quantize_groupwise(w_NK, group_size):
    w = w_NK.float()
    s = (w.abs().amax(dim=1, keepdim=True) / 8).clamp(min=1e-6)
    q = torch.round(w / s).clamp(-8, 7).to(torch.int8)
    return q, s
''', ["one scale per row"]),
        ("divide-by-7", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = torch.clamp(w.abs().amax(-1) / 7, min=1e-6)
    q = torch.round(w / s[:, :, None]).clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s
''', ["/ 8", "not / 7"]),
        ("max-not-abs", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = torch.clamp(w.max(-1).values / 8, min=1e-6)
    q = torch.round(w / s[:, :, None]).clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s
''', ["MAGNITUDE"]),
        ("no-clamp", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = torch.clamp(w.abs().amax(-1) / 8, min=1e-6)
    q = torch.round(w / s[:, :, None])
    return q.reshape(N, K).to(torch.int8), s
''', ["clamp q to \\[-8, 7\\]"]),
        ("truncation", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = torch.clamp(w.abs().amax(-1) / 8, min=1e-6)
    q = (w / s[:, :, None]).clamp(-8, 7).to(torch.int8)
    return q.reshape(N, K), s
''', ["truncates"]),
        ("floor", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = torch.clamp(w.abs().amax(-1) / 8, min=1e-6)
    q = torch.floor(w / s[:, :, None]).clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s
''', ["floor"]),
        ("no-scale-floor", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, K // group_size, group_size)
    s = w.abs().amax(-1) / 8
    q = torch.nan_to_num(torch.round(w / s[:, :, None])).clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s
''', ["1e-6"]),
        ("in-bfloat16", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.reshape(N, K // group_size, group_size)
    s = torch.clamp(w.abs().amax(-1) / 8, min=1e-6)
    q = torch.round(w / s[:, :, None]).clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s.float()
''', ["float32"]),
    ],
    "dequantize_groupwise": [
        ("broadcast-error", '''
def dequantize_groupwise(q_NK, s_NG):
    return q_NK.float() * s_NG.float()
''', ["own group"]),
        ("repeat", '''
def dequantize_groupwise(q_NK, s_NG):
    g = q_NK.shape[1] // s_NG.shape[1]
    return q_NK.float() * s_NG.repeat(1, g)
''', ["CONSECUTIVE", "repeat_interleave"]),
        ("view-g-by-G", '''
def dequantize_groupwise(q_NK, s_NG):
    N, K = q_NK.shape
    G = s_NG.shape[1]
    return (q_NK.float().view(N, K // G, G) * s_NG[:, None, :]).view(N, K)
''', ["CONSECUTIVE"]),
        ("divide", '''
def dequantize_groupwise(q_NK, s_NG):
    N, K = q_NK.shape
    G = s_NG.shape[1]
    return (q_NK.float().view(N, G, K // G) / s_NG[:, :, None]).view(N, K)
''', ["MULTIPLIES"]),
    ],
    "pack_nibbles": [
        ("even-in-high-nibble", '''
def pack_nibbles(q_NK):
    u = (q_NK.to(torch.int16) + 8).to(torch.uint8)
    return u[:, 1::2] | (u[:, 0::2] << 4)
''', ["swapped", "LOW"]),
        ("twos-complement", '''
def pack_nibbles(q_NK):
    lo = q_NK[:, 0::2].to(torch.int16) & 0xF
    hi = q_NK[:, 1::2].to(torch.int16) & 0xF
    return (lo | (hi << 4)).to(torch.uint8)
''', ["offset", "q \\+ 8"]),
        ("raw-cast", '''
def pack_nibbles(q_NK):
    u = q_NK.to(torch.uint8)
    return u[:, ::2] | (u[:, 1::2] << 4)
''', ["q \\+ 8"]),
        ("halves", '''
def pack_nibbles(q_NK):
    u = (q_NK.to(torch.int16) + 8).to(torch.uint8)
    lo, hi = u.chunk(2, dim=1)
    return lo | (hi << 4)
''', ["neighbours"]),
    ],
    "unpack_nibbles": [
        ("high-first", '''
def unpack_nibbles(packed):
    hi = (packed >> 4).to(torch.int8) - 8
    lo = (packed & 15).to(torch.int8) - 8
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.int8)
    out[:, 0::2], out[:, 1::2] = hi, lo
    return out
''', ["swapped"]),
        ("no-offset", '''
def unpack_nibbles(packed):
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.int8)
    out[:, 0::2] = packed & 0xF
    out[:, 1::2] = packed >> 4
    return out
''', ["offset"]),
        ("sign-extended", '''
def unpack_nibbles(packed):
    b = packed.to(torch.int16)
    lo, hi = b & 0xF, b >> 4
    lo = torch.where(lo > 7, lo - 16, lo)
    hi = torch.where(hi > 7, hi - 16, hi)
    return torch.stack((lo, hi), dim=2).reshape(packed.shape[0], -1).to(torch.int8)
''', ["two's complement"]),
        ("signed-shift", '''
def unpack_nibbles(packed):
    b = packed.to(torch.int8)
    lo = (b & 0x0F) - 8
    hi = (b >> 4) - 8
    return torch.stack([lo, hi], -1).flatten(-2).to(torch.int8)
''', ["signed byte"]),
        ("concatenated", '''
def unpack_nibbles(packed):
    lo = (packed & 0x0F).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.cat([lo, hi], dim=1)
''', ["interleave"]),
    ],
    "int4_linear": [
        ("no-transpose", '''
def int4_linear(x_MK, packed, s_NG):
    return x_MK.float() @ dequantize_groupwise(unpack_nibbles(packed), s_NG)
''', ["x @ Ŵ.t\\(\\)"]),
        ("weight-times-x", '''
def int4_linear(x_MK, packed, s_NG):
    w = dequantize_groupwise(unpack_nibbles(packed), s_NG)
    return w @ x_MK.float().T
''', ["\\[M, N\\]"]),
        ("scales-forgotten", '''
def int4_linear(x_MK, packed, s_NG):
    q = unpack_nibbles(packed)
    return x_MK.float() @ q.float().t()
''', ["scales"]),
        ("offset-forgotten", '''
def int4_linear(x_MK, packed, s_NG):
    lo, hi = packed & 0xF, packed >> 4
    q = torch.stack([lo, hi], -1).flatten(1).to(torch.int8)
    return x_MK.float() @ dequantize_groupwise(q, s_NG).t()
''', ["offset"]),
        ("nibbles-swapped", '''
def int4_linear(x_MK, packed, s_NG):
    lo, hi = (packed & 0xF).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    q = torch.stack([hi, lo], -1).flatten(1)
    return x_MK.float() @ dequantize_groupwise(q, s_NG).t()
''', ["swapped"]),
        ("scales-per-column", '''
def int4_linear(x_MK, packed, s_NG):
    q = unpack_nibbles(packed).float()
    N, K = q.shape
    G = s_NG.shape[1]
    w = (q.view(N, K // G, G) * s_NG[:, None, :]).view(N, K)
    return x_MK.float() @ w.t()
''', ["consecutive"]),
    ],
    "int4_model_bytes": [
        ("no-scales", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 // 2 + (config.num_parameters() - n_int4) * dtype_bytes
''', ["scales"]),
        ("no-shared-expert", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * config.num_local_experts * 3 * D * F
    return n_int4 // 2 + n_int4 // group_size * scale_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''', ["shared expert"]),
        ("every-layer", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = config.num_hidden_layers * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 // 2 + n_int4 // group_size * scale_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''', ["dense layers"]),
        ("one-byte-per-weight", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 + n_int4 // group_size * scale_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''', ["half a byte"]),
        ("bits", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 * 4 + n_int4 // group_size * scale_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''', ["4 bits"]),
        ("scales-at-dtype-bytes", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 // 2 + n_int4 // group_size * dtype_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''', ["scale_bytes, not dtype_bytes"]),
        ("counted-twice", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_int4 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_int4 // 2 + n_int4 // group_size * scale_bytes + config.num_parameters() * dtype_bytes
''', ["twice"]),
    ],
}

RIGHT = {
    "quantize_groupwise": [("loop-over-groups", '''
def quantize_groupwise(w_NK, group_size):
    w = w_NK.to(torch.float32)
    N, K = w.shape
    q = torch.empty(N, K, dtype=torch.int8)
    s = torch.empty(N, K // group_size)
    for j in range(K // group_size):
        block = w[:, j * group_size:(j + 1) * group_size]
        scale = torch.clamp(block.abs().max(dim=1).values / 8, min=1e-6)
        s[:, j] = scale
        q[:, j * group_size:(j + 1) * group_size] = torch.clamp(torch.round(block / scale[:, None]), -8, 7)
    return q, s
'''), ("times-reciprocal", '''
def quantize_groupwise(w_NK, group_size):
    N, K = w_NK.shape
    w = w_NK.float().reshape(N, -1, group_size)
    s = (w.abs().amax(-1) / 8).clamp(min=1e-6)
    q = (w * (1.0 / s).unsqueeze(-1)).round().clamp(-8, 7)
    return q.reshape(N, K).to(torch.int8), s
''')],
    "dequantize_groupwise": [("repeat-interleave", '''
def dequantize_groupwise(q_NK, s_NG):
    g = q_NK.shape[1] // s_NG.shape[1]
    return q_NK.to(torch.float32) * s_NG.to(torch.float32).repeat_interleave(g, dim=1)
''')],
    "pack_nibbles": [("arithmetic", '''
def pack_nibbles(q_NK):
    u = q_NK.to(torch.int32) + 8
    return (u[:, 0::2] + 16 * u[:, 1::2]).to(torch.uint8)
''')],
    "unpack_nibbles": [("divmod", '''
def unpack_nibbles(packed):
    b = packed.to(torch.int32)
    out = torch.empty(b.shape[0], 2 * b.shape[1], dtype=torch.int32)
    out[:, 0::2] = b % 16
    out[:, 1::2] = b // 16
    return (out - 8).to(torch.int8)
''')],
    "int4_linear": [("linear-after-dequantize", '''
def int4_linear(x_MK, packed, s_NG):
    import torch.nn.functional as F
    lo, hi = (packed & 0x0F).to(torch.float32) - 8, (packed >> 4).to(torch.float32) - 8
    q = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)
    w = q * s_NG.repeat_interleave(q.shape[1] // s_NG.shape[1], dim=1)
    return F.linear(x_MK.float(), w)
'''), ("scale-each-group-after-its-matmul", '''
def int4_linear(x_MK, packed, s_NG):
    q = unpack_nibbles(packed).float()
    G = s_NG.shape[1]
    g = q.shape[1] // G
    y = torch.zeros(x_MK.shape[0], q.shape[0])
    for j in range(G):  # what a fused kernel does: integer-weight partial sums, then one scale per group
        y += (x_MK[:, j * g:(j + 1) * g].float() @ q[:, j * g:(j + 1) * g].t()) * s_NG[:, j]
    return y
''')],
    "int4_model_bytes": [("per-layer-loop", '''
def int4_model_bytes(config, dtype_bytes=2, group_size=128, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    total_int4_bytes, n_int4 = 0, 0
    for _ in config.moe_layers:
        for _ in range(config.num_local_experts + 1):
            for _ in ("gate", "up", "down"):
                total_int4_bytes += D * F // 2 + (D * F // group_size) * scale_bytes
                n_int4 += D * F
    return total_int4_bytes + (config.num_parameters() - n_int4) * dtype_bytes
''')],
}
