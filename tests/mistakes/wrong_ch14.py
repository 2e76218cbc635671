"""Chapter 14: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "round_e4m3": [
        ("no-saturation", '''
def round_e4m3(x):
    a = x.abs()
    e = torch.floor(torch.log2(a)).clamp(min=-6)
    step = 2.0 ** (e - 3)
    return torch.sign(x) * torch.round(a / step) * step
''', ["no saturation", "448"]),
        ("no-saturation-frexp", '''
def round_e4m3(x):
    m, e = torch.frexp(x.float())
    step = torch.pow(2.0, torch.clamp(e - 1, min=-6).float() - 3)
    return torch.round(x / step) * step
''', ["no saturation"]),
        ("max-240", '''
def round_e4m3(x):
    a = torch.clamp(x.abs(), max=240.0)
    _, e = torch.frexp(a)
    step = torch.exp2(torch.clamp(e - 1, min=-6).float() - 3)
    return torch.copysign(torch.round(a / step) * step, x)
''', ["448", "240"]),
        ("max-480", '''
def round_e4m3(x):
    a = torch.clamp(x.abs(), max=(2 - 2 ** -3) * 2 ** 8)
    _, e = torch.frexp(a)
    step = torch.exp2(torch.clamp(e - 1, min=-6).float() - 3)
    return torch.copysign(torch.round(a / step) * step, x)
''', ["480", "448"]),
        ("log2-of-zero", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448)
    e = torch.floor(torch.log2(a))
    step = 2.0 ** (e - 3)
    return torch.sign(x) * torch.round(a / step) * step
''', ["NaN", "log2\\(0\\)"]),
        ("sign-lost", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448)
    _, e = torch.frexp(a)
    step = 2.0 ** (torch.clamp(e - 1, min=-6) - 3).float()
    return torch.round(a / step) * step
''', ["sign"]),
        ("e5m2-grid", '''
def round_e4m3(x):
    a = x.abs().clamp(max=57344.0)
    _, e = torch.frexp(a)
    step = 2.0 ** (torch.clamp(e - 1, min=-14) - 2).float()
    return torch.copysign(torch.round(a / step) * step, x)
''', ["e5m2", "3 mantissa bits"]),
        ("two-mantissa-bits", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448.0)
    _, e = torch.frexp(a)
    step = 2.0 ** (torch.clamp(e - 1, min=-6) - 2).float()
    return torch.copysign(torch.round(a / step) * step, x)
''', ["e5m2", "8 values"]),
        ("truncation", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448.0)
    _, e = torch.frexp(a)
    step = 2.0 ** (torch.clamp(e - 1, min=-6) - 3).float()
    return torch.copysign((a / step).int().float() * step, x)
''', ["truncat", "nearest"]),
        ("half-away-from-zero", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448.0)
    _, e = torch.frexp(a)
    step = 2.0 ** (torch.clamp(e - 1, min=-6) - 3).float()
    return torch.copysign(torch.floor(a / step + 0.5) * step, x)
''', ["tie", "EVEN"]),
        ("flush-subnormals", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448.0)
    _, e = torch.frexp(a)
    step = 2.0 ** (e - 4).float()
    y = torch.round(a / step) * step
    y[a < 2 ** -6] = 0.0
    return torch.copysign(y, x)
''', ["subnormals", "flushed"]),
        ("no-exponent-floor", '''
def round_e4m3(x):
    a = x.abs().clamp(max=448.0)
    m, e = torch.frexp(a)
    step = torch.ldexp(torch.ones_like(a), e - 4)
    return torch.copysign(torch.round(a / step) * step, x)
''', ["2\\^-9", "clamp the exponent"]),
    ],
    "quantize_rowwise": [
        ("q-left-in-float32", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448
    return (w / s).clamp(-448, 448), s
''', ["float8_e4m3fn"]),
        ("e5m2", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448
    return (w / s).clamp(-448, 448).to(torch.float8_e5m2), s
''', ["e4m3", "gradients"]),
        ("in-bfloat16", '''
def quantize_rowwise(w_NK):
    s = w_NK.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448
    return (w_NK / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["float32"]),
        ("per-column", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().max(dim=0, keepdim=True).values.clamp(min=1e-12) / 448
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["per column", "\\[N, 1\\]"]),
        ("per-tensor", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = (w.abs().max().clamp(min=1e-12) / 448).reshape(1, 1)
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["whole tensor"]),
        ("per-tensor-scalar", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = torch.clamp(w.abs().max(), min=1e-12) / 448
    return torch.clamp(w / s, -448, 448).to(torch.float8_e4m3fn), s
''', ["whole tensor", "one scale per row"]),
        ("per-tensor-expanded", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = (w.abs().max().clamp(min=1e-12) / 448).expand(w.shape[0], 1)
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["whole tensor", "one scale per row"]),
        ("s-shaped-N", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1).clamp(min=1e-12) / 448
    return (w / s[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["keepdim", "\\[N, 1\\]"]),
        ("no-amax-floor", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True) / 448
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["1e-12", "NaN"]),
        ("s-is-amax", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    return (w / s).to(torch.float8_e4m3fn), s
''', ["divide by 448"]),
        ("int8-range", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["127", "int8", "448"]),
        ("e5m2-range", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 57344
    return (w / s).to(torch.float8_e4m3fn), s
''', ["57344", "e5m2", "448"]),
        ("s-reciprocal", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = 448 / w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    return (w * s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["not 448 / amax"]),
        ("q-times-s", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448
    return torch.clamp(w * s, -448, 448).to(torch.float8_e4m3fn), s
''', ["multiplied by s"]),
        ("max-not-abs", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    s = w.max(dim=1, keepdim=True).values.clamp(min=1e-12) / 448
    return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
''', ["MAGNITUDE"]),
    ],
    "scaled_matmul": [
        ("divides-by-scales", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return (xq_MK.float() / sx_M1) @ (wq_NK.float() / sw_N1).T
''', ["MULTIPLIES"]),
        ("no-scales", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return xq_MK.to(torch.float32) @ wq_NK.to(torch.float32).t()
''', ["left out"]),
        ("drops-s_w", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    x = xq_MK.float() * sx_M1
    return x @ wq_NK.float().t()
''', ["dropped s_w"]),
        ("drops-s_x", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return xq_MK.float() @ (wq_NK.float() * sw_N1).t()
''', ["dropped s_x"]),
        ("s_w-wrong-axis", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    y = xq_MK.float() @ wq_NK.float().t()
    return y * sx_M1 * sw_N1
''', ["columns of y", "s_w.t\\(\\)"]),
        ("s_w-wrong-axis-einsum", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    y = torch.einsum("mk,nk->mn", xq_MK.float(), wq_NK.float())
    return y * (sx_M1 * sw_N1)
''', ["columns of y"]),
        ("no-transpose", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return (xq_MK.float() * sx_M1) @ (wq_NK.float() * sw_N1)
''', ["\\[N, K\\]", "Ŵ.t\\(\\)"]),
        ("w-times-x", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return (wq_NK.float() * sw_N1) @ (xq_MK.float() * sx_M1).t()
''', ["transpose"]),
        ("one-scale-divided", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    x_hat = xq_MK.float() * sx_M1
    w_hat = wq_NK.float() / sw_N1
    return x_hat @ w_hat.t()
''', ["factor per token", "divided"]),
        ("in-bfloat16", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    x = xq_MK.to(torch.bfloat16) * sx_M1.to(torch.bfloat16)
    w = wq_NK.to(torch.bfloat16) * sw_N1.to(torch.bfloat16)
    return (x @ w.t()).float()
''', ["float32"]),
        ("returns-bfloat16", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    y = xq_MK.bfloat16() @ wq_NK.bfloat16().t()
    return y * sx_M1.bfloat16() * sw_N1.t().bfloat16()
''', ["float32"]),
    ],
    "fp8_linear": [
        ("x-not-quantized", '''
def fp8_linear(x_MK, wq_NK, sw_N1):
    w = wq_NK.float() * sw_N1
    return x_MK.float() @ w.t()
''', ["quantized too"]),
        ("one-scale-for-all-tokens", '''
def fp8_linear(x_MK, wq_NK, sw_N1):
    x = x_MK.float()
    s = x.abs().max().clamp(min=1e-12) / 448
    xq = (x / s).clamp(-448, 448).to(torch.float8_e4m3fn)
    return scaled_matmul(xq, s.expand(x.shape[0], 1), wq_NK, sw_N1)
''', ["all tokens", "per token"]),
        ("per-channel", '''
def fp8_linear(x_MK, wq_NK, sw_N1):
    x = x_MK.float()
    s_1K = x.abs().amax(dim=0, keepdim=True).clamp(min=1e-12) / 448
    xq = (x / s_1K).clamp(-448, 448).to(torch.float8_e4m3fn)
    return (xq.float() * s_1K) @ (wq_NK.float() * sw_N1).t()
''', ["per channel", "per token|one per token"]),
    ],
    "fp8_model_bytes": [
        ("no-scales", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    n_fp8 = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return n_fp8 + (config.num_parameters() - n_fp8) * dtype_bytes
''', ["forgot the scales"]),
        ("no-shared-expert", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    E = len(config.moe_layers) * config.num_local_experts
    return E * (3 * D * F + (2 * F + D) * scale_bytes) + (config.num_parameters() - E * 3 * D * F) * dtype_bytes
''', ["shared expert"]),
        ("every-layer", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    E = config.num_hidden_layers * (config.num_local_experts + 1)
    return E * (3 * D * F + (2 * F + D) * scale_bytes) + (config.num_parameters() - E * 3 * D * F) * dtype_bytes
''', ["dense layers"]),
        ("counted-twice", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    E = len(config.moe_layers) * (config.num_local_experts + 1)
    return E * (3 * D * F + (2 * F + D) * scale_bytes) + config.num_parameters() * dtype_bytes
''', ["twice"]),
        ("scales-per-input-column", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    E = len(config.moe_layers) * (config.num_local_experts + 1)
    per_expert = 3 * D * F + (D + D + F) * scale_bytes  # gate, up: D inputs each; down: F inputs
    return E * per_expert + (config.num_parameters() - E * 3 * D * F) * dtype_bytes
''', ["OUTPUT row"]),
        ("scales-at-dtype-bytes", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    E = len(config.moe_layers) * (config.num_local_experts + 1)
    return E * (3 * D * F + (2 * F + D) * dtype_bytes) + (config.num_parameters() - E * 3 * D * F) * dtype_bytes
''', ["scale_bytes, not dtype_bytes"]),
    ],
}

RIGHT = {
    "round_e4m3": [("the-fp8-cast", '''
def round_e4m3(x):
    return x.float().clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()
'''), ("log2-with-a-floor", '''
def round_e4m3(x):
    a = x.float().abs().clamp(max=448.0)
    e = torch.floor(torch.log2(a)).clamp(min=-6.0)  # log2(0) = -inf -> -6: zero is a subnormal
    step = 2.0 ** (e - 3)
    return torch.copysign(torch.round(a / step) * step, x.float())
''')],
    "quantize_rowwise": [("loop-over-rows", '''
def quantize_rowwise(w_NK):
    w = w_NK.to(torch.float32)
    q = torch.empty(w.shape, dtype=torch.float8_e4m3fn)
    s = torch.empty(w.shape[0], 1)
    for n in range(w.shape[0]):
        s[n, 0] = max(w[n].abs().max().item(), 1e-12) / 448.0
        q[n] = torch.clamp(w[n] / s[n, 0], -448.0, 448.0).to(torch.float8_e4m3fn)
    return q, s
'''), ("where-for-zero-rows", '''
def quantize_rowwise(w_NK):
    w = w_NK.float()
    amax = w.abs().amax(-1, keepdim=True)
    s = torch.where(amax > 1e-12, amax, torch.full_like(amax, 1e-12)) / 448
    return (w / s).to(torch.float8_e4m3fn), s
''')],
    "scaled_matmul": [("scales-after-the-fp8-products", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    acc = xq_MK.float() @ wq_NK.float().t()  # what the tensor cores sum: products of FP8 values
    return acc * (sx_M1 * sw_N1.t())  # y[m, n] = s_x[m] s_w[n] Σ_k q_x q_w
'''), ("einsum", '''
def scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1):
    return torch.einsum("mk,nk->mn", xq_MK.float() * sx_M1, wq_NK.float() * sw_N1)
''')],
    "fp8_linear": [("by-hand", '''
def fp8_linear(x_MK, wq_NK, sw_N1):
    import torch.nn.functional as F
    x = x_MK.float()
    sx = x.abs().amax(1, keepdim=True).clamp_min(1e-12) / 448
    x_hat = torch.clamp(x / sx, -448, 448).to(torch.float8_e4m3fn).float() * sx
    return F.linear(x_hat, wq_NK.float() * sw_N1)
''')],
    "fp8_model_bytes": [("per-matrix-loop", '''
def fp8_model_bytes(config, dtype_bytes=2, scale_bytes=4):
    D, F = config.hidden_size, config.intermediate_size
    total, n_fp8 = 0, 0
    for _ in config.moe_layers:
        for _ in range(config.num_local_experts + 1):
            for rows, cols in ((F, D), (F, D), (D, F)):  # gate, up, down: [out, in]
                total += rows * cols + rows * scale_bytes
                n_fp8 += rows * cols
    return total + (config.num_parameters() - n_fp8) * dtype_bytes
''')],
}
