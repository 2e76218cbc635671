"""FP8: two 8-bit float formats, their scales, the scaled matmul, FP8 experts for inference and FP8 training.

The two formats (torch.float8_e4m3fn and torch.float8_e5m2), a value = ± 2^(exponent − bias) · 1.mantissa:

    e4m3  1 sign, 4 exponent bits (bias 7), 3 mantissa bits: max 448,   smallest normal 2^-6,  smallest 2^-9,  no inf
    e5m2  1 sign, 5 exponent bits (bias 15), 2 mantissa bits: max 57344, smallest normal 2^-14, smallest 2^-16, ±inf

Between two powers of two e4m3 has 8 values and e5m2 4, so rounding costs at most 2^-4 (e4m3) or 2^-3 (e5m2) of a
value. e4m3 is the precise one (weights, activations), e5m2 the wide one (gradients, whose sizes spread further).

A scale moves a tensor onto the grid: x ≈ q · s with

    s = max(amax, ε) / FP8_MAX        amax = max |x| over the scaling group; ε = 1e-12 keeps an all-zero group finite
    q = sat(x / s)                     round to nearest (ties to even) after clamping to ±FP8_MAX: never inf or NaN

The group is the whole tensor, a row (W [N, K]: one scale per output channel; x [M, K]: one per token), or a block
(e.g. 128 × 128). Scales are float32 [N / bn, K / bk] for groups of bn × bk: [1, 1], [N, 1] or [N/128, K/128].

The scaled matmul, both operands in FP8 with tensor-wise or row-wise scales:

    y = (q_x · s_x)(q_w · s_w)ᵀ = (q_x q_wᵀ) ⊙ (s_x s_wᵀ)           x [M, K], W [N, K], s_x [M, 1], s_w [N, 1]

On a GPU that has FP8 tensor cores (an H100: twice the bf16 FLOPs) `torch._scaled_mm` runs it. Everywhere else,
the CPU included, the emulation dequantizes both operands and does one float32 matmul: the same bits on every CPU.
(torch's own CPU `_scaled_mm` is that emulation for most operands, but for two operands of one format with
tensor-wise scales on CPUs with AMX it calls a oneDNN kernel that sums in another order and, in torch 2.13, took
0.9 s per call at 512 × 128 × 384 and 77 s at 512 × 1024 × 2048, against 1 ms and 28 ms for the emulation.)

Inference (`from_pretrained(..., quantize="fp8")`, the FP8-release recipe): the routed and shared experts keep e4m3
weights with one scale per output row; activations are quantized per token as they arrive (dynamic scaling), so the
matmul is FP8 × FP8, which is what the tensor cores need. Everything else keeps its dtype.

Training (`fp8_training(model)`): the linears of the decoder blocks multiply in FP8. Forward: x and W in e4m3;
backward: the output gradient in e5m2; each with one scale per tensor, recomputed at every step from the tensor's
own amax ("current scaling"). Master weights, their gradients and the optimizer stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import ExpertBank
from .quant import QuantError, QuantizedExpertBank, QuantizedLinear, quant_error

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}  # largest finite value of each format
# past these a cast without saturation gives NaN (e4m3fn) or inf (e5m2): ±max plus half the last grid step
OVERFLOW_AT = {E4M3: 464.0, E5M2: 61440.0}
AMAX_FLOOR = 1e-12  # s = max(amax, AMAX_FLOOR) / FP8_MAX: an all-zero group gets a finite scale (and q = 0)
ACT_AMAX_CAP = 1200.0  # Meta's fp8 recipe caps a token's amax: one huge value saturates instead of flushing the rest
BLOCK = 128  # block-wise scaling: one scale per 128 × 128 block (DeepSeek-V3's weight blocks)
GRANULARITIES = ("tensor", "row", "column", "block")


# --------------------------------------------------------------------------------------------- the formats
def _check_format(dtype: torch.dtype) -> None:
    if dtype not in FP8_MAX:
        raise ValueError(f"not an FP8 format: {dtype}; use torch.float8_e4m3fn (E4M3) or torch.float8_e5m2 (E5M2)")


def fp8_grid(dtype: torch.dtype = E4M3) -> torch.Tensor:
    """Every finite value of the format, sorted: the 256 bit patterns decoded, NaN and ±inf dropped, −0 = 0."""
    _check_format(dtype)
    v = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    return v[v.isfinite()].unique()


def saturate_cast(x: torch.Tensor, dtype: torch.dtype = E4M3) -> torch.Tensor:
    """x → FP8, rounding to the nearest value (ties to even), with values beyond ±max clamped to ±max first: without
    the clamp e5m2 turns them into ±inf (and e4m3fn, which has no inf, into NaN on some devices)."""
    _check_format(dtype)
    m = FP8_MAX[dtype]
    return x.float().clamp(-m, m).to(dtype)


def group_shape(granularity: str, shape: tuple, block: int = BLOCK) -> tuple[int, int]:
    """(bn, bk): the rows and columns that share one scale in a [N, K] tensor."""
    N, K = shape
    if granularity == "tensor":
        return N, K
    if granularity == "row":
        return 1, K
    if granularity == "column":
        return N, 1
    if granularity == "block":
        if N % block or K % block:
            raise ValueError(f"block-wise scaling needs both dimensions divisible by block={block}, got [{N}, {K}]")
        return block, block
    raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")


def quantize(x_NK: torch.Tensor, dtype: torch.dtype = E4M3, granularity: str = "row", block: int = BLOCK,
             amax_cap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, K] → (q [N, K] in dtype, s float32 [N/bn, K/bk]) with x ≈ q · s, one scale per group of bn × bk
    (`group_shape`). amax_cap: clamp each group's amax to it (values beyond then saturate)."""
    _check_format(dtype)
    if x_NK.dim() != 2 or not x_NK.is_floating_point():
        raise ValueError(f"quantize takes a 2-D float tensor, got shape {tuple(x_NK.shape)} of {x_NK.dtype}")
    N, K = x_NK.shape
    bn, bk = group_shape(granularity, (N, K), block)
    x_GbHk = x_NK.float().reshape(N // bn, bn, K // bk, bk)  # G × H groups of bn × bk
    amax_GH = x_GbHk.abs().amax(dim=(1, 3))
    if amax_cap is not None:
        amax_GH = amax_GH.clamp(max=amax_cap)
    s_GH = amax_GH.clamp_min(AMAX_FLOOR) / FP8_MAX[dtype]  # s = max(amax, ε) / FP8_MAX
    q = saturate_cast(x_GbHk / s_GH[:, None, :, None], dtype)  # q = sat(x / s)
    return q.reshape(N, K), s_GH


def dequantize(q_NK: torch.Tensor, s_GH: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x̂ = q · s, each scale repeated over its group (the group shape is read off s: [N/bn, K/bk])."""
    N, K = q_NK.shape
    G, H = s_GH.shape
    if N % G or K % H:
        raise ValueError(f"scales of shape {[G, H]} do not tile a [{N}, {K}] tensor")
    return (q_NK.float().reshape(G, N // G, H, K // H) * s_GH.float()[:, None, :, None]).reshape(N, K).to(dtype)


def fp8_bytes(n: int, k: int, scale_bytes: int = 4) -> int:
    """Bytes of an [n, k] weight in FP8 with row-wise scales: one byte per weight + one scale per row."""
    return n * k + n * scale_bytes


def expected_fp8_bytes(config, dtype_bytes: int = 2, scale_bytes: int = 4) -> int:
    """Bytes of a model with FP8 experts (`quantize="fp8"`), from the config alone: routed and shared experts at one
    byte per weight + one scale per output row, every other weight at dtype_bytes."""
    D, F_ = config.hidden_size, config.intermediate_size
    expert_matrices = len(config.moe_layers) * (config.num_local_experts + 1)  # routed + shared, each three D×F matrices
    fp8 = expert_matrices * (fp8_bytes(2 * F_, D, scale_bytes) + fp8_bytes(D, F_, scale_bytes))
    return fp8 + (config.num_parameters() - expert_matrices * 3 * D * F_) * dtype_bytes


# --------------------------------------------------------------------------------------------- the scaled matmul
def scaled_mm_emulated(a_q: torch.Tensor, s_a: torch.Tensor, b_q: torch.Tensor, s_b: torch.Tensor,
                       out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """y = (a_q · s_a)(b_q · s_b)ᵀ for a [M, K], b [N, K] with scales of any granularity: dequantize both, one float32
    matmul (b laid out [K, N]), round to out_dtype. For tensor- and row-wise scales these are, step for step, the
    operations of torch's reference CPU `_scaled_mm`, so the two give the same bits (not its oneDNN kernel on AMX
    CPUs: see the module's docstring)."""
    a_MK = dequantize(a_q, s_a)
    b_KN = dequantize(b_q, s_b).t().contiguous()
    return (a_MK @ b_KN).to(out_dtype)


@lru_cache(maxsize=None)
def scaled_mm_supported(device_type: str, a_dtype: torch.dtype, b_dtype: torch.dtype, out_dtype: torch.dtype,
                        rowwise: bool) -> bool:
    """Does this torch run `torch._scaled_mm` on this kind of device for these dtypes and scales? Tried once on a
    16 × 32 × 16 problem (recent torch has it on CPU, and on CUDA from compute capability 8.9: Ada, Hopper)."""
    if not hasattr(torch, "_scaled_mm") or device_type not in ("cpu", "cuda"):
        return False
    if device_type == "cuda" and not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)):
        return False
    a = torch.ones(16, 32, device=device_type).to(a_dtype)
    b = torch.ones(16, 32, device=device_type).to(b_dtype)
    s = torch.ones(16 if rowwise else 1, 1, device=device_type)
    try:
        torch._scaled_mm(a, b.t(), scale_a=s, scale_b=s.t(), out_dtype=out_dtype)
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return False
    return True


def _fast_scales(a_q, s_a, b_q, s_b) -> str | None:
    """The scale recipe `torch._scaled_mm` takes for these operands: "row" ([M, 1] and [N, 1]; a single row's scale
    [1, 1] counts as row-wise), "tensor" ([1, 1] both), or None (block scales: emulation only)."""
    if s_a.shape == (a_q.shape[0], 1) and s_b.shape == (b_q.shape[0], 1):
        return "row"
    return "tensor" if s_a.shape == s_b.shape == (1, 1) else None


def scaled_mm(a_q: torch.Tensor, s_a: torch.Tensor, b_q: torch.Tensor, s_b: torch.Tensor,
              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """y = (a_q · s_a)(b_q · s_b)ᵀ: a [M, K] and b [N, K] in FP8, float32 scales (both tensor-wise [1, 1], both
    row-wise [M, 1] and [N, 1], or any block shape). On a GPU, `torch._scaled_mm` where it runs these operands
    (tensor- or row-wise scales, K and N multiples of 16, see `scaled_mm_supported`); otherwise, and always on CPU,
    `scaled_mm_emulated` (see the module's docstring for why not torch's CPU kernel)."""
    if a_q.dim() != 2 or b_q.dim() != 2 or a_q.shape[1] != b_q.shape[1]:
        raise ValueError(f"scaled_mm takes a [M, K] and b [N, K], got {tuple(a_q.shape)} and {tuple(b_q.shape)}")
    _check_format(a_q.dtype)
    _check_format(b_q.dtype)
    kind = _fast_scales(a_q, s_a, b_q, s_b)
    K, N = a_q.shape[1], b_q.shape[0]
    fast = (a_q.device.type == "cuda" and kind is not None and K % 16 == 0 and N % 16 == 0
            and scaled_mm_supported("cuda", a_q.dtype, b_q.dtype, out_dtype, kind == "row"))
    if not fast:
        return scaled_mm_emulated(a_q, s_a, b_q, s_b, out_dtype)
    # the kernels take the second operand column-major: b [N, K] row-major, seen as [K, N]
    return torch._scaled_mm(a_q.contiguous(), b_q.contiguous().t(), scale_a=s_a.float().contiguous(),
                            scale_b=s_b.float().t().contiguous(), out_dtype=out_dtype)


# --------------------------------------------------------------------------------------------- inference modules
class Fp8Linear(QuantizedLinear):
    """y = x Ŵᵀ for a weight W [N, K] stored in e4m3 with one float32 scale per output row (a drop-in for a bias-free
    nn.Linear). Each call quantizes its input per token (row), s_x = min(amax, 1200) / 448, and runs the scaled
    matmul FP8 × FP8; the output has the input's dtype. Built empty; `set_weight` quantizes a float weight."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(0, dtype=E4M3))  # q_w [N, K]
        self.register_buffer("scales", torch.empty(0))  # s_w float32 [N, 1]
        self.last_error: QuantError | None = None

    @classmethod
    def from_float(cls, w_NK: torch.Tensor, name: str = "") -> tuple["Fp8Linear", QuantError]:
        """Quantize W [N, K] on its own device. Returns the module and its quantization error."""
        m = cls(w_NK.shape[1], w_NK.shape[0])
        return m, m.set_weight(w_NK, name)

    def set_weight(self, w_NK: torch.Tensor, name: str = "") -> QuantError:
        if tuple(w_NK.shape) != (self.out_features, self.in_features):
            raise ValueError(f"{name or 'weight'}: shape {list(w_NK.shape)}, expected {[self.out_features, self.in_features]}")
        self.qweight, self.scales = quantize(w_NK, E4M3, "row")
        self.last_error = quant_error(name, w_NK, self.dequantize(), self.nbytes())
        return self.last_error

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ŵ [N, K]."""
        if not self.qweight.numel():
            raise RuntimeError("Fp8Linear has no weight yet (call set_weight)")
        return dequantize(self.qweight, self.scales, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.qweight.numel():
            raise RuntimeError("Fp8Linear has no weight yet (call set_weight)")
        if self.qweight.dtype != E4M3:  # model.to(dtype) converts every float tensor, FP8 ones included
            raise RuntimeError(f"Fp8Linear's weight was converted to {self.qweight.dtype}; choose the other weights' "
                               "dtype when loading: from_pretrained(..., dtype=..., quantize='fp8')")
        x_MK = x.reshape(-1, self.in_features)
        xq_MK, sx_M1 = quantize(x_MK, E4M3, "row", amax_cap=ACT_AMAX_CAP)  # dynamic: this call's tokens
        y_MN = scaled_mm(xq_MK, sx_M1, self.qweight, self.scales, out_dtype=x.dtype)
        return y_MN.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"


class Fp8ExpertBank(QuantizedExpertBank):
    """E SwiGLU experts with e4m3 weights, one scale per output row (per column of the checkpoint's tensors)."""

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__(num_experts, dim, hidden, Fp8Linear)


# --------------------------------------------------------------------------------------------- training
@dataclass
class Fp8Stats:
    """What the casts of FP8 training did, per operand ("x" activations, "w" weights, "grad" output gradients):
    [values cast, overflows (|x / s| past OVERFLOW_AT: saturated to ±max), underflows (nonzero values that became 0)],
    summed over calls."""
    counts: dict = field(default_factory=lambda: {k: [0, 0, 0] for k in ("x", "w", "grad")})

    def add(self, kind: str, t: torch.Tensor, s: torch.Tensor, q: torch.Tensor, dtype: torch.dtype) -> None:
        c = self.counts[kind]
        c[0] += t.numel()
        c[1] += int((t.abs() / s >= OVERFLOW_AT[dtype]).sum())
        c[2] += int(((q.float() == 0) & (t != 0)).sum())

    def fractions(self) -> dict:
        """{kind: {"overflow": share of values saturated, "underflow": share flushed to 0}}."""
        return {k: {"overflow": o / max(1, n), "underflow": u / max(1, n)} for k, (n, o, u) in self.counts.items()}


def _cast(t: torch.Tensor, dtype: torch.dtype, scaled: bool, stats: Fp8Stats | None, kind: str):
    """One operand of a training matmul → (q, s [1, 1]): current scaling (s from this tensor's amax, now) or, with
    scaled=False, s = 1 (the raw cast, to see what breaks)."""
    if scaled:
        q, s = quantize(t, dtype, "tensor")
    else:
        q, s = saturate_cast(t, dtype), torch.ones(1, 1, device=t.device)
    if stats is not None:
        stats.add(kind, t, s, q, dtype)
    return q, s


class Fp8Matmul(torch.autograd.Function):
    """y = x Wᵀ in FP8 with float32 master tensors. Tensor-wise scales, because each FP8 operand is used twice,
    contracted along different dimensions (x along K in y = x Wᵀ, along M in ∂W = gᵀ x): one scale per tensor is
    valid for both, a row-wise one would have to be recomputed along the other axis.

        forward   y  = (q_x s_x)(q_w s_w)ᵀ                   q_x, q_w in e4m3
        backward  ∂x = (q_g s_g)(q_w s_w)    [M, K]          q_g in e5m2
                  ∂W = (q_g s_g)ᵀ(q_x s_x)   [N, K]
    """

    @staticmethod
    def forward(ctx, x_MK, w_NK, scaled: bool, stats: Fp8Stats | None):
        xq, sx = _cast(x_MK, E4M3, scaled, stats, "x")
        wq, sw = _cast(w_NK, E4M3, scaled, stats, "w")
        ctx.save_for_backward(xq, sx, wq, sw)
        ctx.scaled, ctx.stats, ctx.x_dtype = scaled, stats, x_MK.dtype
        return scaled_mm(xq, sx, wq, sw, out_dtype=x_MK.dtype)

    @staticmethod
    def backward(ctx, g_MN):
        xq, sx, wq, sw = ctx.saved_tensors
        gq, sg = _cast(g_MN, E5M2, ctx.scaled, ctx.stats, "grad")
        grad_x = scaled_mm(gq, sg, wq.t(), sw, out_dtype=ctx.x_dtype) if ctx.needs_input_grad[0] else None  # g W
        grad_w = scaled_mm(gq.t(), sg, xq.t(), sx, out_dtype=torch.float32)  # gᵀ x, for the float32 master weight
        return grad_x, grad_w, None, None


def fp8_matmul(x: torch.Tensor, w_NK: torch.Tensor, scaled: bool = True, stats: Fp8Stats | None = None) -> torch.Tensor:
    """x [..., K] → x Wᵀ [..., N], multiplied in FP8 (e4m3 forward, e5m2 gradients), differentiable in x and W."""
    y = Fp8Matmul.apply(x.reshape(-1, x.shape[-1]), w_NK, scaled, stats)
    return y.reshape(*x.shape[:-1], w_NK.shape[0])


class Fp8TrainingLinear(nn.Linear):
    """A bias-free nn.Linear whose matmul runs in FP8 (`fp8_matmul`); its float32 weight is the master copy."""
    scaled: bool = True  # current scaling; False: raw casts (scale 1)
    stats: Fp8Stats | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_matmul(x, self.weight, self.scaled, self.stats)


class Fp8TrainingExpertBank(ExpertBank):
    """An ExpertBank whose matmuls run in FP8: expert e computes x W_e with W_e = gate_up_proj[e] as [D, 2F], which is
    x (W_eᵀ)ᵀ, so the [out, in] weight of `fp8_matmul` is W_eᵀ."""
    gather_rows = 0  # every call takes forward_sorted (ExpertBank's gathered path would multiply in float)
    scaled: bool = True
    stats: Fp8Stats | None = None

    def _expert(self, w1_D2F: torch.Tensor, w2_FD: torch.Tensor, x_TD: torch.Tensor) -> torch.Tensor:
        gate_TF, up_TF = fp8_matmul(x_TD, w1_D2F.t(), self.scaled, self.stats).chunk(2, dim=-1)
        return fp8_matmul(F.silu(gate_TF) * up_TF, w2_FD.t(), self.scaled, self.stats)

    def forward_expert(self, e: int, x_TD: torch.Tensor) -> torch.Tensor:
        return self._expert(self.gate_up_proj[e], self.down_proj[e], x_TD)

    def forward_sorted(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        w1_E, w2_E = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)  # unbind once (see ExpertBank)
        ys = [self._expert(w1_E[e], w2_E[e], x_nD) for e, x_nD in enumerate(x_ND.split(counts_E.tolist()))
              if x_nD.shape[0]]
        return torch.cat(ys) if ys else x_ND.new_zeros(0, self.dim)

    def forward(self, x_ETD: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.forward_expert(e, x_ETD[e]) for e in range(self.num_experts)])


def fp8_training(model: nn.Module, scaled: bool = True, stats: Fp8Stats | None = None) -> nn.Module:
    """In place: every linear of the decoder blocks (attention q, k, v, o; shared expert or dense FFN; routed experts)
    multiplies in FP8 from now on. Embeddings, router, norms and lm_head stay float32 (the usual choice: the first
    and last layers and the router's discrete choice are the most sensitive). The parameters are the same objects,
    so the optimizer, the state_dict and checkpoints are unchanged. Returns the model."""
    for layer in model.layers:
        for name, mod in list(layer.named_modules()):
            if type(mod) is nn.Linear:
                if mod.bias is not None:
                    raise ValueError(f"{name}: FP8 training takes bias-free linears")
                with torch.device("meta"):
                    new = Fp8TrainingLinear(mod.in_features, mod.out_features, bias=False)
                new.weight = mod.weight
            elif type(mod) is ExpertBank:
                with torch.device("meta"):
                    new = Fp8TrainingExpertBank(mod.num_experts, mod.dim, mod.hidden)
                new.gate_up_proj, new.down_proj = mod.gate_up_proj, mod.down_proj
            else:
                continue
            new.scaled, new.stats = scaled, stats
            parent, _, leaf = name.rpartition(".")
            setattr(layer.get_submodule(parent), leaf, new)
    return model
