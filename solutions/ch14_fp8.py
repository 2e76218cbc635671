"""Chapter 14 exercises: rounding to e4m3, row-wise scales, the scaled matmul, an FP8 linear layer with per-token
activation scales, and the memory arithmetic of a model with FP8 experts.

Fill in each function between the markers. Shapes: a weight W is [N, K] (out, in; used as x Wᵀ), activations x are
[M, K] (M tokens). e4m3 is torch.float8_e4m3fn: largest value 448, 3 mantissa bits, smallest normal 2^-6, smallest
value 2^-9.
"""

import torch

E4M3_MAX = 448.0
AMAX_FLOOR = 1e-12


def round_e4m3(x: torch.Tensor) -> torch.Tensor:
    """The e4m3 value nearest to each element of x, computed with float arithmetic (no float8 dtype), as float32.

    Between 2^e and 2^(e+1) e4m3 has 8 evenly spaced values, a step of 2^(e-3); below the smallest normal 2^-6 the
    step stays 2^-9 (the subnormals, down to 0). Round to the nearest value, a tie to the even one (torch.round
    does that); a value beyond ±448 becomes ±448 (saturation: e4m3 has no infinity); NaN stays NaN; the sign is
    kept (also on zero)."""
    ### BEGIN SOLUTION
    a = x.float().abs().clamp(max=E4M3_MAX)  # saturate first: nothing beyond ±448
    _, e = torch.frexp(a)  # a = m · 2^e, m in [0.5, 1): a lies in [2^(e-1), 2^e)
    step = torch.exp2((e - 1).clamp(min=-6).float() - 3)  # 8 values per binade; subnormals keep 2^-9
    return torch.copysign(torch.round(a / step) * step, x.float())  # nearest, ties to even
    ### END SOLUTION


def quantize_rowwise(w_NK: torch.Tensor):
    """Row-wise FP8 quantization of W [N, K] (one scale per output channel, computed in float32):

        s[n] = max(max_k |W[n, k]|, 1e-12) / 448          q[n, k] = W[n, k] / s[n], cast to e4m3

    (the cast rounds to nearest). With this s, W / s is already within ±448; clamp it to ±448 before the cast
    anyway, as the package does before every cast: a scale taken from an older amax (delayed scaling) would leave
    values past the range, which e4m3fn cannot hold. Return (q torch.float8_e4m3fn [N, K], s float32 [N, 1])."""
    ### BEGIN SOLUTION
    w = w_NK.float()
    s_N1 = w.abs().amax(dim=1, keepdim=True).clamp_min(AMAX_FLOOR) / E4M3_MAX  # the row's largest |w| → 448
    q_NK = (w / s_N1).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q_NK, s_N1
    ### END SOLUTION


def scaled_matmul(xq_MK: torch.Tensor, sx_M1: torch.Tensor, wq_NK: torch.Tensor, sw_N1: torch.Tensor) -> torch.Tensor:
    """y = (q_x · s_x)(q_w · s_w)ᵀ, float32 [M, N], for e4m3 operands q_x [M, K], q_w [N, K] and float32 scales
    s_x [M, 1] (one per token) and s_w [N, 1] (one per output channel). Compute in float32. (Equivalently
    y[m, n] = s_x[m] · s_w[n] · Σ_k q_x[m, k] q_w[n, k]: why row scales can be applied after the FP8 products.)"""
    ### BEGIN SOLUTION
    x_MK = xq_MK.float() * sx_M1  # dequantize: x̂ = q · s
    w_NK = wq_NK.float() * sw_N1
    return x_MK @ w_NK.t()
    ### END SOLUTION


def fp8_linear(x_MK: torch.Tensor, wq_NK: torch.Tensor, sw_N1: torch.Tensor) -> torch.Tensor:
    """An FP8 linear layer at inference: the weight is already quantized row-wise (q_w, s_w), the activations are
    quantized as they arrive, one scale per token (row of x), exactly as `quantize_rowwise` does for W; then the
    scaled matmul. x [M, K] float → y float32 [M, N]. (The package also caps a token's amax at 1200; these inputs
    stay below that.)"""
    ### BEGIN SOLUTION
    xq_MK, sx_M1 = quantize_rowwise(x_MK)  # dynamic: each token gets its own scale
    return scaled_matmul(xq_MK, sx_M1, wq_NK, sw_N1)
    ### END SOLUTION


def fp8_model_bytes(config, dtype_bytes: int = 2, scale_bytes: int = 4) -> int:
    """Bytes of a Llama 4 text model whose routed and shared experts are FP8 (the rest in dtype_bytes per weight),
    from its config alone. In every MoE layer (`config.moe_layers`) the routed experts (`config.num_local_experts`)
    and the shared expert each hold three matrices: gate [F, D], up [F, D], down [D, F] (D = hidden_size,
    F = intermediate_size). In FP8 a matrix costs one byte per weight plus one scale of `scale_bytes` per output
    row. Every other parameter (`config.num_parameters()` counts them all) keeps `dtype_bytes` per weight."""
    ### BEGIN SOLUTION
    D, F = config.hidden_size, config.intermediate_size
    experts = len(config.moe_layers) * (config.num_local_experts + 1)  # routed + shared
    fp8 = experts * (3 * D * F + (F + F + D) * scale_bytes)  # weights + one scale per output row (gate, up, down)
    rest = config.num_parameters() - experts * 3 * D * F
    return fp8 + rest * dtype_bytes
    ### END SOLUTION
