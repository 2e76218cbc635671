"""Weight-only int4: group-wise symmetric quantization of the experts, as Meta runs Scout on one GPU.

Each row n of a weight W [N, K] (out, in; used as x Wᵀ) is cut into groups of g = 128 consecutive inputs.
A group keeps one float scale and 128 four-bit integers:

    s[n, j] = max_{k ∈ group j} |W[n, k]| / 8              (never below 1e-6)
    q[n, k] = clamp(round(W[n, k] / s[n, k // g]), -8, 7)   a signed 4-bit integer
    Ŵ[n, k] = q[n, k] · s[n, k // g]                         what the matmul uses

Storage: two 4-bit values per byte. We store q + 8 ∈ [0, 15] ("offset binary", what torch's int4 kernels take);
the byte at [n, i] holds k = 2i in its low nibble and k = 2i + 1 in its high nibble (Meta's nibble order; Meta
stores two's-complement nibbles instead of q + 8, the same information). So a weight costs 4 bits plus
32 / g bits of scale: 4.25 bits at g = 128, against 16 for bfloat16.

Which tensors: the routed experts and the shared expert of every MoE layer (Meta's `int4_mixed`); attention,
embeddings, router, norms and lm_head stay in bfloat16. Activations stay in their float dtype (W4A16).

Two storage layouts, one meaning:
  "plain"   the packed bytes above + float32 scales [N, K/g]. Matmul = dequantize, then an ordinary matmul.
            Readable, exact, runs anywhere: the CPU reference.
  "kernel"  the same nibbles rearranged by torch's own converter for its int4 matmul kernel
            (`_weight_int4pack_mm` on CUDA: "tinygemm"; `_weight_int4pack_mm_for_cpu` on CPU), with bfloat16
            (scale, zero = 0) pairs [K/g, N, 2]. Same bytes per weight. A decode step (a few rows) runs the kernel,
            which reads the 4-bit weights directly; a long prompt dequantizes once and uses a bfloat16 matmul,
            which is faster for many rows. The kernel's nibble order is not documented, so we *measure* it once
            per shape (`kernel_permutation`) and check it, rather than assume it.

An `Int4ExpertBank` keeps one pair of quantized matrices per expert, stacked along a leading expert dimension. A long
prompt runs each expert that received tokens on them; a decode step picks the chosen experts' packed weights by index
on the device (`forward_gathered`). Either way only the selected experts' weights are read. The bank
(`QuantizedExpertBank`) and the streaming loader work with any `QuantizedLinear`: FP8 (`fp8.py`) uses them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .ffn import GATHER_ROWS, SwiGLU

GROUP_SIZE = 128  # inputs per scale (Meta's int4_mixed)
QMIN, QMAX = -8, 7  # signed 4-bit range
SMALL_BATCH_ROWS = 16  # at most this many rows: run the int4 kernel; more: dequantize + bf16 matmul
CUDA_INNER_K_TILES = 8  # tinygemm's tiling parameter (2, 4 or 8); 8 is the fastest for decode


# --------------------------------------------------------------------------------------------- the arithmetic
def _check_weight(w_NK: torch.Tensor, group_size: int) -> None:
    if w_NK.dim() != 2:
        raise ValueError(f"int4 quantization takes a 2-D weight [out, in], got shape {tuple(w_NK.shape)}")
    if not w_NK.is_floating_point():
        raise ValueError(f"int4 quantization takes a float weight, got {w_NK.dtype}")
    if group_size <= 0 or group_size % 2:
        raise ValueError(f"group_size must be a positive even number, got {group_size}")
    if w_NK.shape[1] % group_size:
        raise ValueError(f"the input dimension K={w_NK.shape[1]} is not a multiple of group_size={group_size}")


def quantize_int4(w_NK: torch.Tensor, group_size: int = GROUP_SIZE, scale_dtype: torch.dtype = torch.float32):
    """W [N, K] → (q [N, K] int8 in [-8, 7], scales [N, K/g] in scale_dtype). Symmetric, group-wise along K.
    With a lower-precision scale_dtype (bfloat16 for the kernels), q is computed with the rounded scale."""
    _check_weight(w_NK, group_size)
    N, K = w_NK.shape
    w_NGg = w_NK.float().view(N, K // group_size, group_size)
    s_NG = (w_NGg.abs().amax(-1) / 8).clamp_min(1e-6).to(scale_dtype)  # s = max|w| / 8
    q_NGg = torch.round(w_NGg / s_NG.float()[..., None]).clamp_(QMIN, QMAX)  # q = clamp(round(w / s), -8, 7)
    return q_NGg.view(N, K).to(torch.int8), s_NG


def dequantize_int4(q_NK: torch.Tensor, s_NG: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ŵ = q · s, with s repeated over its group. → [N, K] in dtype."""
    N, K = q_NK.shape
    G = s_NG.shape[1]
    return (q_NK.view(N, G, K // G).float() * s_NG.float()[..., None]).view(N, K).to(dtype)


def pack_int4(q_NK: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] in [-8, 7] → uint8 [N, K/2]: byte i = (q[2i] + 8) | (q[2i+1] + 8) << 4."""
    if q_NK.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got {q_NK.shape[-1]}")
    if q_NK.numel() and (int(q_NK.min()) < QMIN or int(q_NK.max()) > QMAX):
        raise ValueError(f"values outside the int4 range [{QMIN}, {QMAX}]: [{int(q_NK.min())}, {int(q_NK.max())}]")
    u = (q_NK.to(torch.int16) + 8).to(torch.uint8)  # offset binary: 0 … 15
    return u[..., 0::2] | (u[..., 1::2] << 4)  # even k in the low nibble, odd k in the high nibble


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] → int8 [N, K] in [-8, 7] (the inverse of pack_int4)."""
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack([lo, hi], -1).flatten(-2).to(torch.int8) - 8


def int4_bytes(n: int, k: int, group_size: int = GROUP_SIZE, scale_bytes: int = 4) -> int:
    """Bytes an [n, k] weight takes in int4: n·k/2 for the nibbles + one scale per group."""
    return n * k // 2 + n * (k // group_size) * scale_bytes


@dataclass
class QuantError:
    """How far one quantized tensor is from the original."""
    name: str  # tensor name (checkpoint key, or module path)
    shape: tuple  # original shape
    rel_rms: float  # ‖Ŵ − W‖ / ‖W‖ (Frobenius)
    max_abs: float  # max |Ŵ − W|
    bytes_before: int  # in the original dtype
    bytes_after: int  # packed nibbles + scales

    def __str__(self) -> str:
        return (f"{self.name:60s} {str(list(self.shape)):>18s}  rel. RMS error {self.rel_rms:.4f}  "
                f"max |err| {self.max_abs:.3g}  {self.bytes_before / 2**20:8.2f} → {self.bytes_after / 2**20:7.2f} MiB")


def summarize(errors: list[QuantError]) -> str:
    """Totals of a quantization report: how many tensors, bytes before → after, mean and worst relative error."""
    if not errors:
        return "no tensors quantized"
    before, after = sum(e.bytes_before for e in errors), sum(e.bytes_after for e in errors)
    worst = max(errors, key=lambda e: e.rel_rms)
    return (f"{len(errors)} tensors: {before / 2**20:,.1f} → {after / 2**20:,.1f} MiB ({before / after:.2f}× smaller); "
            f"relative RMS error mean {sum(e.rel_rms for e in errors) / len(errors):.4f}, "
            f"worst {worst.rel_rms:.4f} ({worst.name})")


def quant_error(name: str, w: torch.Tensor, w_hat: torch.Tensor, bytes_after: int) -> QuantError:
    d = (w_hat.float() - w.float())
    return QuantError(name, tuple(w.shape), (d.norm() / w.float().norm().clamp_min(1e-30)).item(), d.abs().max().item(),
                      w.numel() * w.element_size(), bytes_after)


# --------------------------------------------------------------------------------------------- torch's int4 kernels
def kernel_available(device: torch.device | str) -> bool:
    """Is there a torch int4 matmul kernel for this device?"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return hasattr(torch.ops.aten, "_weight_int4pack_mm") and torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type == "cpu":
        return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    return False


def kernel_shape_ok(n: int, k: int, group_size: int, device: torch.device | str) -> bool:
    """The kernels tile N by 8 and K by 16 · inner_k_tiles, and take group sizes 32 … 256."""
    tiles = CUDA_INNER_K_TILES if torch.device(device).type == "cuda" else 1
    return n % 8 == 0 and k % (16 * max(tiles, 2)) == 0 and group_size in (32, 64, 128, 256)


def _kernel_pack(u_NK: torch.Tensor) -> torch.Tensor:
    """Offset-binary values u ∈ [0, 15], int32 [N, K] → torch's packed kernel layout on u's device."""
    if u_NK.device.type == "cuda":  # the CUDA converter takes bytes with the *even* k in the high nibble
        return torch.ops.aten._convert_weight_to_int4pack(
            (u_NK[:, 0::2] << 4 | u_NK[:, 1::2]).to(torch.uint8).contiguous(), CUDA_INNER_K_TILES)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(u_NK.to(torch.int32).contiguous(), 1)


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Every 4-bit value of a packed tensor, low nibble of each byte first → uint8 [2 · bytes]."""
    b = packed.contiguous().view(torch.uint8).reshape(-1)
    return torch.stack([b & 0x0F, b >> 4], -1).reshape(-1)


@lru_cache(maxsize=16)
def kernel_permutation(n: int, k: int, device: torch.device) -> torch.Tensor:
    """Where torch's converter puts each weight: int32 [N·K], entry i = the nibble index (in `_nibbles` order)
    holding element i of the row-major [N, K] input. Measured by packing the bits of the element indices: the
    b-th probe packs digit b (base 16) of each element's own index, so each output nibble spells out, digit by
    digit, the index of the element it came from. Checked on random values before it is trusted.
    Cached per shape and device: 4 bytes per weight of each distinct shape (Scout: three shapes, 0.67 GB)."""
    M = n * k
    idx = torch.arange(M, device=device, dtype=torch.int64)
    src = torch.zeros(M, dtype=torch.int64, device=device)  # src[j] = input element held by nibble j
    for b in range(max(1, math.ceil(math.log2(M) / 4))):
        digit = ((idx >> (4 * b)) & 0xF).view(n, k).to(torch.int32)
        src |= _nibbles(_kernel_pack(digit)).to(torch.int64) << (4 * b)
    if src.numel() != M or not torch.equal(torch.sort(src).values, idx):
        raise RuntimeError(f"torch's int4 packing on {device} is not a permutation of nibbles for shape [{n}, {k}]; "
                           "the kernel layout changed: use layout='plain'")
    inv = torch.empty(M, dtype=torch.int32, device=device)
    inv[src] = torch.arange(M, device=device, dtype=torch.int32)
    u = torch.randint(0, 16, (n, k), device=device, dtype=torch.int32)  # self-check on random values
    if not torch.equal(_nibbles(_kernel_pack(u)).index_select(0, inv).view(n, k).to(torch.int32), u):
        raise RuntimeError(f"int4 kernel layout check failed for shape [{n}, {k}] on {device}")
    return inv


# --------------------------------------------------------------------------------------------- modules
class QuantizedLinear(nn.Module):
    """What every quantized linear of the package offers (int4 here, FP8 in fp8.py): y = x Ŵᵀ for a bias-free W [N, K]
    kept as two buffers, `qweight` (the low-precision values) and `scales`; built empty, filled by
    `set_weight(W, name) → QuantError`; `dequantize(dtype) → Ŵ [N, K]`."""

    in_features: int
    out_features: int

    def nbytes(self) -> int:
        return self.qweight.numel() * self.qweight.element_size() + self.scales.numel() * self.scales.element_size()


def resolve_layout(layout: str, n: int, k: int, group_size: int, device: torch.device | str) -> str:
    """'auto' → 'kernel' on CUDA where torch's kernel takes this shape, else 'plain' (the CPU reference)."""
    if layout not in ("auto", "plain", "kernel"):
        raise ValueError(f"layout must be 'auto', 'plain' or 'kernel', got {layout!r}")
    if layout != "auto":
        return layout
    dev = torch.device(device)
    ok = dev.type == "cuda" and kernel_available(dev) and kernel_shape_ok(n, k, group_size, dev)
    return "kernel" if ok else "plain"


class Int4Linear(QuantizedLinear):
    """y = x Ŵᵀ for a weight W [N, K] stored in int4 (drop-in for a bias-free nn.Linear). Built empty; `set_weight`
    quantizes a float weight on its device (layout 'auto' is resolved then)."""

    def __init__(self, in_features: int, out_features: int, group_size: int = GROUP_SIZE, layout: str = "auto"):
        super().__init__()
        resolve_layout(layout, out_features, in_features, group_size, "cpu")  # validates the name
        if group_size <= 0 or in_features % group_size:
            raise ValueError(f"in_features={in_features} is not a multiple of group_size={group_size}")
        self.in_features, self.out_features, self.group_size, self.layout = in_features, out_features, group_size, layout
        self.register_buffer("qweight", torch.empty(0, dtype=torch.uint8))  # packed nibbles (layout-specific)
        self.register_buffer("scales", torch.empty(0))  # plain: float32 [N, K/g]; kernel: bf16 (scale, 0) [K/g, N, 2]
        self.last_error: QuantError | None = None

    @classmethod
    def from_float(cls, w_NK: torch.Tensor, group_size: int = GROUP_SIZE, layout: str = "auto",
                   name: str = "") -> tuple["Int4Linear", QuantError]:
        """Quantize W [N, K] on its own device. Returns the module and its quantization error."""
        m = cls(w_NK.shape[1], w_NK.shape[0], group_size, layout)
        return m, m.set_weight(w_NK, name)

    def set_weight(self, w_NK: torch.Tensor, name: str = "") -> QuantError:
        N, K = w_NK.shape
        if (N, K) != (self.out_features, self.in_features):
            raise ValueError(f"{name or 'weight'}: shape {[N, K]}, expected {[self.out_features, self.in_features]}")
        self.layout = resolve_layout(self.layout, N, K, self.group_size, w_NK.device)
        if self.layout == "plain":
            q_NK, s_NG = quantize_int4(w_NK, self.group_size)
            self.qweight, self.scales = pack_int4(q_NK), s_NG
        else:
            if not kernel_available(w_NK.device) or not kernel_shape_ok(N, K, self.group_size, w_NK.device):
                raise ValueError(f"{name or 'weight'}: no int4 kernel for shape {[N, K]}, group {self.group_size} "
                                 f"on {w_NK.device}; use layout='plain'")
            q_NK, s_NG = quantize_int4(w_NK, self.group_size, scale_dtype=torch.bfloat16)
            self.qweight = _kernel_pack(q_NK.to(torch.int32) + 8)
            self.scales = torch.stack([s_NG.t(), torch.zeros_like(s_NG.t())], -1).contiguous()  # (scale, zero) [G, N, 2]
        self.last_error = quant_error(name, w_NK, dequantize_int4(q_NK, s_NG), self.nbytes())
        return self.last_error

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ŵ [N, K]."""
        N, K = self.out_features, self.in_features
        if not self.qweight.numel():
            raise RuntimeError("Int4Linear has no weight yet (call set_weight)")
        if self.layout == "plain":
            return dequantize_int4(unpack_int4(self.qweight), self.scales, dtype)
        inv = kernel_permutation(N, K, self.qweight.device)
        q_NK = _nibbles(self.qweight).index_select(0, inv).view(N, K).to(torch.int8) - 8
        return dequantize_int4(q_NK, self.scales[..., 0].t(), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_MK = x.reshape(-1, self.in_features)
        if self.layout == "kernel" and x_MK.shape[0] <= SMALL_BATCH_ROWS:  # decode: read the 4-bit weights directly
            y_MN = _kernel_mm(x_MK, self.qweight, self.group_size, self.scales)
        else:  # reference / long prompt: Ŵ in x's dtype, then an ordinary matmul
            y_MN = F.linear(x_MK, self.dequantize(x.dtype))
        return y_MN.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"layout={self.layout}")


def _kernel_mm(x_MK: torch.Tensor, packed, group_size: int, scale_zeros) -> torch.Tensor:
    if x_MK.device.type == "cuda":  # tinygemm: bfloat16 activations
        return torch.ops.aten._weight_int4pack_mm(x_MK.to(torch.bfloat16).contiguous(), packed, group_size,
                                                  scale_zeros).to(x_MK.dtype)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x_MK.contiguous(), packed, group_size, scale_zeros.to(x_MK.dtype))


class QuantizedExpertBank(nn.Module):
    """E SwiGLU experts whose matrices are quantized linears, built empty by `make_linear(in_features, out_features)`
    (Int4Linear here, Fp8Linear in fp8.py). Expert e: gate_up[e] = W_gate|W_up as [2F, D], down[e] = W_down as [D, F]
    (the checkpoint's [D, 2F] and [F, D], transposed to the [out, in] layout the quantizers work along).
    The interface of `ExpertBank`: `forward_sorted` runs only the experts that received rows (and reads only their
    weights); `forward_gathered` picks each row's expert by index on the device."""

    gather_rows = GATHER_ROWS  # up to this many rows the MoE layer calls forward_gathered

    def __init__(self, num_experts: int, dim: int, hidden: int, make_linear):
        super().__init__()
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.gate_up = nn.ModuleList(make_linear(dim, 2 * hidden) for _ in range(num_experts))
        self.down = nn.ModuleList(make_linear(hidden, dim) for _ in range(num_experts))
        self._stacks = {}  # kind → {buffer name → [E, …]}, each expert's buffer a slice of it (see `stacked`)

    def load_gate_up(self, gate_up_EDH: torch.Tensor, name: str = "gate_up_proj") -> list[QuantError]:
        """Quantize the checkpoint's gate_up_proj [E, D, 2F], one expert at a time (float temporaries stay one
        expert large)."""
        self._check(name, gate_up_EDH, (self.num_experts, self.dim, 2 * self.hidden))
        return self._load(self.gate_up, gate_up_EDH, name)

    def load_down(self, down_EFD: torch.Tensor, name: str = "down_proj") -> list[QuantError]:
        """Quantize the checkpoint's down_proj [E, F, D], one expert at a time."""
        self._check(name, down_EFD, (self.num_experts, self.hidden, self.dim))
        return self._load(self.down, down_EFD, name)

    @staticmethod
    def _load(mods: nn.ModuleList, w_EKN: torch.Tensor, name: str) -> list[QuantError]:
        """Quantize expert by expert into one stacked buffer per kind (qweight [E, …], scales [E, …]); each expert's
        module keeps views. Few large allocations instead of 2E small ones that would fragment the heap."""
        errors, stacked = [], None
        for e, m in enumerate(mods):
            errors.append(m.set_weight(w_EKN[e].t(), f"{name}[{e}]"))
            if stacked is None:
                stacked = [torch.empty((len(mods), *t.shape), dtype=t.dtype, device=t.device) for t in (m.qweight, m.scales)]
            stacked[0][e].copy_(m.qweight)
            stacked[1][e].copy_(m.scales)
            m.qweight, m.scales = stacked[0][e], stacked[1][e]
        return errors

    @staticmethod
    def _check(name, t, want):
        if tuple(t.shape) != want:
            raise ValueError(f"{name}: shape {list(t.shape)}, expected {list(want)}")

    def forward_expert(self, e: int, x_TD: torch.Tensor) -> torch.Tensor:
        gate_TF, up_TF = self.gate_up[e](x_TD).chunk(2, dim=-1)  # x W_gate, x W_up in one int4 matmul
        return self.down[e](F.silu(gate_TF) * up_TF)

    def forward_sorted(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Rows grouped by expert (counts_E[e] rows for expert e, in order) → each row's expert output [N, D].
        Experts with no rows are skipped: a batch-1 decode step reads one routed expert's weights per layer."""
        ys = [self.forward_expert(e, x_nD) for e, x_nD in enumerate(x_ND.split(counts_E.tolist())) if x_nD.shape[0]]
        return torch.cat(ys) if ys else x_ND.new_zeros(0, self.dim)

    def forward_gathered(self, x_ND: torch.Tensor, expert_N: torch.Tensor) -> torch.Tensor:
        """Row n through expert expert_N[n] → [N, D], for a few rows (a decode step). Each row's quantized buffers are
        picked from the stacked ones by index on the device: only the chosen experts' weights are read, nothing is
        read back to the host, and no shape depends on the routing."""
        gate_NF, up_NF = self._gathered("gate_up", x_ND, expert_N).chunk(2, dim=-1)
        return self._gathered("down", F.silu(gate_NF) * up_NF, expert_N)

    def _gathered(self, kind: str, x_NK: torch.Tensor, expert_N: torch.Tensor) -> torch.Tensor:
        """y[n] = x[n] Ŵ[expert_N[n]]ᵀ for the matrices of `kind`: expert 0's module (every expert's has the same
        shape and format) run with row n's expert's buffers in place of its own."""
        picked = {name: t_E.index_select(0, expert_N) for name, t_E in self.stacked(kind).items()}  # [N, …]
        mod = getattr(self, kind)[0]
        return torch.cat([functional_call(mod, {name: t_N[n] for name, t_N in picked.items()}, (x_NK[n:n + 1],))
                          for n in range(x_NK.shape[0])])

    def stacked(self, kind: str) -> dict[str, torch.Tensor]:
        """Every buffer of the `kind` experts' modules ("gate_up" or "down": qweight, scales, …) as one tensor [E, …]
        whose slices the modules hold. The loader builds them that way; if they were not (or no longer are, e.g.
        after `.to()`), they are stacked once, here. Inside a compiled step the stacks found before are used."""
        if torch.compiler.is_compiling():  # checked by the eager call that prepared the step (`prepare_gather`)
            if kind not in self._stacks:
                raise RuntimeError("call prepare_gather() on the expert banks before compiling (DecodeStep does)")
            return self._stacks[kind]
        mods = getattr(self, kind)
        stacks = {}
        for name, t0 in mods[0].named_buffers():
            ts = [getattr(m, name) for m in mods]
            base = t0._base
            if base is None or base.shape != (len(ts), *t0.shape) or any(t.data_ptr() != b.data_ptr()
                                                                         for t, b in zip(ts, base)):
                if not t0.numel():
                    raise RuntimeError("the expert bank has no weights yet (call load_gate_up and load_down)")
                base = torch.stack(ts)
                for m, t in zip(mods, base):
                    setattr(m, name, t)
            stacks[name] = base
        self._stacks[kind] = stacks
        return stacks

    def _apply(self, fn, recurse=True):
        self._stacks = {}  # `.to()` and the like give every expert new buffers: forget the old stacks (and free them)
        return super()._apply(fn, recurse)

    def prepare_gather(self) -> None:
        """Find (or build) the stacked buffers before a decode step is compiled."""
        for kind in ("gate_up", "down"):
            self.stacked(kind)

    def forward(self, x_ETD: torch.Tensor) -> torch.Tensor:
        """Every expert on its own batch (the dense reference computation)."""
        return torch.stack([self.forward_expert(e, x_ETD[e]) for e in range(self.num_experts)])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_proj [E, D, 2F], down_proj [E, F, D]) in the checkpoint layout, dequantized."""
        return (torch.stack([m.dequantize(dtype).t() for m in self.gate_up]),
                torch.stack([m.dequantize(dtype).t() for m in self.down]))


class Int4ExpertBank(QuantizedExpertBank):
    """E SwiGLU experts with int4 weights (group-wise, `group_size` inputs per scale)."""

    def __init__(self, num_experts: int, dim: int, hidden: int, group_size: int = GROUP_SIZE, layout: str = "auto"):
        super().__init__(num_experts, dim, hidden, lambda k, n: Int4Linear(k, n, group_size, layout))


def quantized_swiglu(dim: int, hidden: int, make_linear) -> SwiGLU:
    """A SwiGLU whose three projections are empty quantized linears: the shared expert of a quantized MoE layer."""
    with torch.device("meta"):  # its nn.Linear weights are replaced right away: allocate nothing for them
        ffn = SwiGLU(dim, hidden)
    ffn.gate_proj = make_linear(dim, hidden)  # W_gate [F, D]
    ffn.up_proj = make_linear(dim, hidden)  # W_up   [F, D]
    ffn.down_proj = make_linear(hidden, dim)  # W_down [D, F]
    return ffn


def int4_swiglu(dim: int, hidden: int, group_size: int = GROUP_SIZE, layout: str = "auto") -> SwiGLU:
    """A SwiGLU whose three projections are (empty) Int4Linear."""
    return quantized_swiglu(dim, hidden, lambda k, n: Int4Linear(k, n, group_size, layout))


QUANTIZE_SCHEMES = ("int4", "fp8")  # the names from_pretrained(..., quantize=) and quantize_model take


def check_scheme(quantize) -> None:
    if quantize not in QUANTIZE_SCHEMES:
        raise ValueError(f"quantize={quantize!r} is not supported; choose one of {', '.join(map(repr, QUANTIZE_SCHEMES))}")


def quantized_moe_parts(quantize: str, num_experts: int, dim: int, hidden: int, group_size: int = GROUP_SIZE,
                        layout: str = "auto") -> tuple[QuantizedExpertBank, SwiGLU]:
    """The empty quantized modules of one MoE layer, (routed expert bank, shared expert), in scheme `quantize`:
    "int4" (group-wise, weight-only; group_size and layout apply) or "fp8" (fp8.py: e4m3 weights with one scale per
    output row, activations quantized per token as they arrive)."""
    check_scheme(quantize)
    if quantize == "int4":
        return Int4ExpertBank(num_experts, dim, hidden, group_size, layout), int4_swiglu(dim, hidden, group_size, layout)
    from .fp8 import Fp8ExpertBank, Fp8Linear  # fp8.py builds on this file (QuantizedLinear, the expert bank)

    return Fp8ExpertBank(num_experts, dim, hidden), quantized_swiglu(dim, hidden, Fp8Linear)


def quantize_model(model: nn.Module, group_size: int = GROUP_SIZE, layout: str = "auto",
                   quantize: str = "int4") -> list[QuantError]:
    """In place: the routed and shared experts of every MoE layer become `quantize` ("int4": Meta's int4_mixed
    recipe; "fp8": e4m3 with row-wise scales); everything else keeps its dtype. group_size and layout apply to int4.
    Returns one QuantError per quantized matrix (also kept as model.quant_report)."""
    check_scheme(quantize)
    errors = []
    for i, layer in enumerate(model.layers):
        if not layer.is_moe:
            continue
        moe, name = layer.feed_forward, f"layers.{i}.feed_forward"
        if isinstance(moe.experts, QuantizedExpertBank):
            raise ValueError(f"{name} is already quantized")
        old, shared = moe.experts, moe.shared_expert
        bank, new_shared = quantized_moe_parts(quantize, old.num_experts, old.dim, old.hidden, group_size, layout)
        errors += bank.load_gate_up(old.gate_up_proj.detach(), f"{name}.experts.gate_up_proj")
        errors += bank.load_down(old.down_proj.detach(), f"{name}.experts.down_proj")
        for proj in ("gate_proj", "up_proj", "down_proj"):
            errors.append(getattr(new_shared, proj).set_weight(getattr(shared, proj).weight.detach(),
                                                               f"{name}.shared_expert.{proj}.weight"))
        moe.experts, moe.shared_expert = bank, new_shared
    model.quant_report = errors
    return errors


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and persistent buffer (a tied weight counts once): what the weights cost in memory."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def expected_int4_bytes(config, dtype_bytes: int = 2, group_size: int = GROUP_SIZE, scale_bytes: int = 4) -> int:
    """Bytes of a model after `quantize_model`, from the config alone: experts and shared experts at
    4 bits + one scale per group, every other weight at dtype_bytes."""
    D, F_ = config.hidden_size, config.intermediate_size
    n_moe = len(config.moe_layers)
    expert_matrices = n_moe * (config.num_local_experts + 1)  # routed + shared, each three D×F matrices
    int4 = expert_matrices * (int4_bytes(2 * F_, D, group_size, scale_bytes) + int4_bytes(D, F_, group_size, scale_bytes))
    rest = config.num_parameters() - expert_matrices * 3 * D * F_
    return int4 + rest * dtype_bytes
