"""Chapter 14 cases: rounding to e4m3, row-wise FP8 scales, the scaled matmul, an FP8 linear layer and the bytes of a
model with FP8 experts. Expected values come from the package: `fp8.saturate_cast`, `fp8.quantize`, `fp8.scaled_mm`,
`fp8.Fp8Linear` and `fp8.expected_fp8_bytes`. Below them, the common wrong versions the grader recognises, with what
it tells the learner."""

import math

import torch

from ...config import Llama4Config
from ...fp8 import E4M3, E5M2, Fp8Linear, dequantize, expected_fp8_bytes, quantize, saturate_cast, scaled_mm
from .core import Case, Exercise, Mistake, compare_outputs, register
from .core import seeded as _g

E4M3_MAX = 448.0


# ------------------------------------------------------------------------------------------------ comparing FP8
def _as_float(x):
    """FP8 tensors → float32 (torch cannot compare float8 tensors), anything else as it is."""
    if isinstance(x, (tuple, list)):
        return type(x)(_as_float(y) for y in x)
    if isinstance(x, torch.Tensor) and x.dtype in (E4M3, E5M2):
        return x.float()
    return x


def _compare_fp8(got, expected):
    """compare_outputs, after checking that an expected FP8 tensor came back in that very FP8 format."""
    g = list(got) if isinstance(got, (tuple, list)) else [got]
    e = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    for i, (a, b) in enumerate(zip(g, e)):
        if isinstance(b, torch.Tensor) and b.dtype in (E4M3, E5M2) and isinstance(a, torch.Tensor) \
                and a.dtype != b.dtype:
            what = f"output {i}: " if len(e) > 1 else ""
            return False, math.inf, f"{what}dtype {a.dtype}, expected {b.dtype}"
    return compare_outputs(_as_float(got), _as_float(expected), False)


# ------------------------------------------------------------------------------------------------ cases
def _round_inputs():
    """Inputs for round_e4m3, one kind of situation per case so that the first failing one names the mistake:
    ordinary values (normal numbers and zeros); exact ties (normal and subnormal); the subnormal range; values at and
    past 448 with ±inf; and a broad 2-D mix with NaN."""
    plain = torch.randn(64, generator=_g(1400)) * 10
    plain = torch.cat([torch.copysign(plain.abs().clamp(0.02, 200), plain), torch.tensor([0.0, -0.0])])  # normals
    grid = torch.tensor([1.0, 1.125, 1.25, 2.0, 2.25, 3.5, 6.0, 14.0, 40.0, 112.0])  # e4m3 values with mantissas 0-6
    steps = torch.tensor([0.125, 0.125, 0.125, 0.25, 0.25, 0.25, 0.5, 1.0, 4.0, 16.0])
    ties = torch.cat([grid + steps / 2, -(grid + steps / 2),  # halfway to the next value: to the EVEN mantissa
                      torch.tensor([2.0 ** -10, 3 * 2.0 ** -10, 5 * 2.0 ** -10, -3 * 2.0 ** -10])])  # subnormal ties
    tiny = torch.cat([torch.rand(40, generator=_g(1401)) * 2.0 ** -6, -torch.rand(20, generator=_g(1402)) * 2.0 ** -5,
                      torch.tensor([0.0, -0.0, 2.0 ** -9, 2.0 ** -7, 1e-30, 2.0 ** -11])])
    big = torch.tensor([400.0, 440.0, 447.0, 448.0, 449.0, 460.0, 465.0, 470.0, 479.0, 480.0, 500.0, 600.0, 1e4,
                        -1e6, -470.0, -500.0, float("inf"), float("-inf"), 3e38])
    mix = torch.randn(6, 32, generator=_g(1403)) * torch.exp2(torch.randint(-12, 12, (6, 32), generator=_g(1404)))
    mix[1, 3], mix[4, 0], mix[2, 7] = float("nan"), 0.0, 5000.0
    return [plain, ties, tiny, big, mix]


def _round_cases():
    return [Case((x,), saturate_cast(x, E4M3).float()) for x in _round_inputs()]


def _weights_for_rows():
    """Weights for quantize_rowwise: rows of very different sizes, an all-zero row (the amax floor), rows whose
    largest magnitude is negative, a square one, a bfloat16 one (computed in float32) and an outlier column."""
    ws = []
    w = torch.randn(6, 40, generator=_g(1410)) * torch.logspace(-4, 1, 6)[:, None]
    w[2, 5] = -3 * w[2].abs().max()  # a row whose extreme is negative
    ws.append(w)
    w = torch.randn(5, 24, generator=_g(1411)) * 0.02
    w[3] = 0.0  # an all-zero row: s = 1e-12 / 448, q = 0
    w[1, 0] = -0.5
    ws.append(w)
    ws.append(torch.randn(16, 16, generator=_g(1412)) * torch.rand(16, 1, generator=_g(1413)))
    ws.append((torch.randn(8, 64, generator=_g(1414)) * 0.05).to(torch.bfloat16))
    w = torch.randn(12, 48, generator=_g(1415)) * 0.1
    w[:, 7] *= 200  # an outlier input channel
    ws.append(w)
    return ws


def _rowwise_cases():
    return [Case((w,), quantize(w, E4M3, "row")) for w in _weights_for_rows()]


def _bytes_of(*args):
    """Case inputs as they travel to the worker: FP8 tensors as their bytes (uint8), which pickle can carry."""
    return tuple(a.view(torch.uint8) if isinstance(a, torch.Tensor) and a.dtype in (E4M3, E5M2) else a for a in args)


def _fp8_probe(fn, *args):
    """Call fn with the uint8 inputs of a case viewed back as e4m3 (the probe of the exercises that take FP8)."""
    return fn(*(a.view(E4M3) if isinstance(a, torch.Tensor) and a.dtype == torch.uint8 else a for a in args))


def _mm_operands(M, K, N, seed):
    """q_x [M, K], s_x [M, 1], q_w [N, K], s_w [N, 1]: quantized row-wise from inputs whose rows differ in size."""
    x = torch.randn(M, K, generator=_g(seed)) * torch.logspace(-1, 1, M)[:, None]
    w = torch.randn(N, K, generator=_g(seed + 1)) * torch.logspace(-2, 0, N)[:, None]
    return (*quantize(x, E4M3, "row"), *quantize(w, E4M3, "row"))


def _matmul_cases():
    cases = []
    # a square problem first, where a scale on the wrong axis or a missing transpose still runs
    for seed, (M, K, N) in enumerate([(16, 16, 16), (5, 64, 24), (1, 128, 8), (33, 32, 17)]):
        ops = _mm_operands(M, K, N, 1420 + 2 * seed)
        cases.append(Case(_bytes_of(*ops), scaled_mm(*ops, out_dtype=torch.float32)))
    return cases


def _fp8_layer(w_NK: torch.Tensor) -> Fp8Linear:
    layer, _ = Fp8Linear.from_float(w_NK)
    return layer


def _linear_inputs():
    """(x [M, K], W [N, K]): tokens of very different sizes (one activation scale for all of them costs the small
    ones their precision), a channel much larger than the others, and a square problem."""
    out = []
    x = torch.randn(8, 64, generator=_g(1430)) * torch.logspace(-3, 2, 8)[:, None]  # amax stays below 1200
    out.append((x, torch.randn(24, 64, generator=_g(1431)) * 0.05))
    x = torch.randn(6, 32, generator=_g(1432))
    x[:, 3] *= 50  # an outlier channel
    out.append((x, torch.randn(10, 32, generator=_g(1433)) * 0.1))
    out.append((torch.randn(16, 16, generator=_g(1434)) * 3, torch.randn(16, 16, generator=_g(1435))))
    out.append((torch.randn(1, 128, generator=_g(1436)), torch.randn(40, 128, generator=_g(1437)) * 0.02))
    return out


def _linear_cases():
    cases = []
    for x, w in _linear_inputs():
        layer = _fp8_layer(w)
        with torch.no_grad():
            cases.append(Case(_bytes_of(x, layer.qweight, layer.scales), layer(x)))
    return cases


def _bytes_cases():
    toy, scout, maverick = (Llama4Config.preset(n) for n in ("toy", "scout", "maverick"))
    cases = []
    for cfg, dtype_bytes, sb in [(scout, 2, 4), (maverick, 2, 4), (toy, 4, 4), (toy, 2, 2), (scout, 2, 2),
                                 (toy.replace(moe_layers=[1, 3]), 4, 4),
                                 (toy.replace(num_local_experts=8, num_hidden_layers=2, moe_layers=[0, 1],
                                              no_rope_layers=[1, 0]), 2, 4)]:
        cases.append(Case((cfg,), expected_fp8_bytes(cfg, dtype_bytes, sb), dict(dtype_bytes=dtype_bytes,
                                                                                scale_bytes=sb)))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch14.py holds independently written wrong learner files for each of them.
def _round(mant_bits=3, min_exp=-6, max_val=E4M3_MAX, to_int=torch.round, flush=False):
    """Rounding to a float grid with one thing changed: the mantissa bits, the smallest exponent (None: no floor,
    the step keeps shrinking), the largest value, how a value is rounded to the grid, or subnormals flushed to 0."""
    def wrong(x):
        a = x.float().abs().clamp(max=max_val)
        _, e = torch.frexp(a)
        e = e - 1 if min_exp is None else (e - 1).clamp(min=min_exp)
        step = torch.exp2(e.float() - mant_bits)
        y = to_int(a / step) * step
        if flush:
            y = torch.where(a < 2.0 ** -6, torch.zeros_like(y), y)
        return torch.copysign(y, x.float())
    return wrong


def _half_away(t):
    return torch.floor(t + 0.5)


def _tensor(got) -> bool:
    return isinstance(got, torch.Tensor) and got.is_floating_point()


def _no_saturation(case, got) -> bool:
    """An input past ±448 came out past ±448 (480, 512 …), or as inf or NaN."""
    x = case.args[0]
    past = x.abs() > E4M3_MAX
    return _tensor(got) and bool(past.any()) and bool(((got[past].abs() > E4M3_MAX) | got[past].isnan()).any())


def _max_at(value):
    def test(case, got) -> bool:
        x = case.args[0]
        past = (x.abs() >= 480) & ~x.isnan()
        return _tensor(got) and bool(past.any()) and bool((got[past].abs() == value).all())
    return test


def _zero_is_nan(case, got) -> bool:
    x = case.args[0]
    return _tensor(got) and bool((x == 0).any()) and bool(got[x == 0].isnan().any())


def _sign_lost(case, got) -> bool:
    x = case.args[0]
    return _tensor(got) and bool((x < 0).any()) and torch.allclose(got, case.expected.abs(), equal_nan=True)


def _pair(got) -> bool:
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)


def _q_dtype(dtype):
    def test(case, got) -> bool:
        return _pair(got) and got[0].dtype == dtype
    return test


def _q_not_fp8(case, got) -> bool:
    return _pair(got) and got[0].dtype not in (E4M3, E5M2)


def _s_shape(*shapes_of):
    """s came back in one of these shapes (functions of W) instead of [N, 1]."""
    def test(case, got) -> bool:
        w = case.args[0]
        return _pair(got) and tuple(got[1].shape) != (w.shape[0], 1) and \
            tuple(got[1].shape) in [shape(w) for shape in shapes_of]
    return test


def _s_tensor_wide(case, got) -> bool:
    """s is [N, 1] but every row holds the same scale, the whole tensor's amax / 448 (a per-tensor scale expanded)."""
    w, s = case.args[0].float(), got[1].float()
    return _pair(got) and tuple(s.shape) == (w.shape[0], 1) and w.shape[0] > 1 and bool(
        torch.allclose(s, (w.abs().max().clamp_min(1e-12) / E4M3_MAX).expand_as(s), rtol=1e-3, atol=0))


def _one_scale(case, got) -> bool:
    """One scale for the whole tensor: s is [1, 1], [] or [1], or [N, 1] with the tensor's amax in every row."""
    return _s_shape(lambda w: (1, 1), lambda w: (), lambda w: (1,))(case, got) or _s_tensor_wide(case, got)


def _s_ratio(ratio):
    """s is the expected scale times ratio(expected s) (e.g. 448: the amax itself; 1 / s²: its reciprocal)."""
    def test(case, got) -> bool:
        s, s_ref = got[1].float().reshape(-1), case.expected[1].reshape(-1)
        keep = case.args[0].float().abs().amax(1) > 0
        return _pair(got) and s.shape == s_ref.shape and torch.allclose(s[keep], ratio(s_ref[keep]), rtol=1e-3)
    return test


def _no_amax_floor(case, got) -> bool:
    """A zero row got s = 0 (then q = 0 / 0 = NaN), or a NaN scale."""
    if not _pair(got):
        return False
    s, q = got[1].float(), got[0].float()
    return bool((s == 0).any() or s.isnan().any() or q.isnan().any())


def _in_bfloat16(case, got) -> bool:
    return _pair(got) and case.args[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16


def _rowwise(q_times_s=False, magnitude=torch.abs):
    def wrong(w_NK):
        w = w_NK.float()
        s = magnitude(w).amax(1, keepdim=True).clamp_min(1e-12) / E4M3_MAX
        q = (w * s) if q_times_s else (w / s)
        return q.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), s
    return wrong


def _matmul(dx=True, dw=True, divide=False, w_axis_wrong=False, transpose=True):
    """The scaled matmul with one thing changed: a scale dropped, the scales divided instead of multiplied, s_w
    applied per row of y (per token) instead of per column, or W not transposed."""
    def wrong(xq, sx, wq, sw):
        x, w = xq.float(), wq.float()
        if divide:
            return (x / sx) @ (w / sw).t()
        if not transpose:
            return (x * sx) @ (w * sw)
        y = x @ w.t()
        if dx:
            y = y * sx
        if dw:
            y = y * (sw if w_axis_wrong else sw.t())
        return y
    return wrong


def _off_by_row_and_column_factors(case, got) -> bool:
    """got[m, n] = a[m] · b[n] · y[m, n] for some a, b: log(got / y) is a row term plus a column term."""
    e = case.expected
    if not _tensor(got) or got.shape != e.shape or min(e.shape) < 2 or (e == 0).any():
        return False
    r = got.double() / e.double()
    if not bool((r > 0).all()) or torch.allclose(r, torch.ones_like(r), rtol=1e-3):
        return False
    lr = r.log()
    resid = lr - lr.mean(1, keepdim=True) - lr.mean(0, keepdim=True) + lr.mean()
    return bool(resid.abs().max() < 1e-3)


def _bf16_result(case, got) -> bool:
    """Computed in bfloat16: a bfloat16 result, or float32 values that are all exactly bfloat16 numbers."""
    if not _tensor(got) or got.shape != case.expected.shape:
        return False
    return got.dtype == torch.bfloat16 or bool((got == got.bfloat16().float()).all()) and \
        not bool((case.expected == case.expected.bfloat16().float()).all())


def _transposed_output(case, got) -> bool:
    e = case.expected
    return _tensor(got) and got.shape == e.shape[::-1] and not torch.allclose(e, e.t(), atol=1e-4, rtol=1e-3) \
        and torch.allclose(got.t().float(), e, atol=1e-4, rtol=1e-3)


def _linear(x_granularity="row", quantize_x=True):
    """An FP8 linear with the activations scaled per tensor or per channel (column) instead of per token, or not
    quantized at all."""
    def wrong(x_MK, wq_NK, sw_N1):
        w_hat = dequantize(wq_NK, sw_N1)
        x_hat = dequantize(*quantize(x_MK, E4M3, x_granularity)) if quantize_x else x_MK.float()
        return x_hat @ w_hat.t()
    return wrong


def _bytes(routed_extra=1, layers=lambda c: len(c.moe_layers), scales=lambda D, F: F + F + D, subtract=True,
           scale_size=lambda dtype_bytes, scale_bytes: scale_bytes):
    """The FP8 model's bytes with one thing changed: the shared expert, which layers are FP8, the number of scales
    per expert, the bytes of a scale, or the FP8 weights counted again in the rest."""
    def wrong(config, dtype_bytes=2, scale_bytes=4):
        D, F = config.hidden_size, config.intermediate_size
        experts = layers(config) * (config.num_local_experts + routed_extra)
        fp8 = experts * (3 * D * F + scales(D, F) * scale_size(dtype_bytes, scale_bytes))
        rest = config.num_parameters() - (experts * 3 * D * F if subtract else 0)
        return fp8 + rest * dtype_bytes
    return wrong

register(Exercise(
    "round_e4m3", 14, "round_e4m3", _round_cases,
    "a = |x| clamped to 448; _, e = torch.frexp(a) (a in [2^(e-1), 2^e)); step = 2^(max(e - 1, -6) - 3); "
    "y = torch.round(a / step) · step; torch.copysign(y, x)",
    nudge="Between two powers of two, how many e4m3 values are there, so what is the step near x? What does the step "
          "become below the smallest normal 2^-6, and what happens past 448?",
    mistakes=[
        Mistake("448 is e4m3's largest value, clamp |x| to 448 (240 is the max of the IEEE-style e4m3 with inf, "
                "e4m3fn has no inf and uses those patterns for larger numbers)", test=_max_at(240.0)),
        Mistake("you clamped to 480: e4m3fn's largest value is 448 = 1.75 · 2^8 (the pattern 1.875 · 2^8 is "
                "NaN), clamp |x| to 448", test=_max_at(480.0)),
        Mistake("no saturation: values past ±448 came out larger (480, 512 …), inf or NaN; clamp |x| to 448 before "
                "rounding", test=_no_saturation),
        Mistake("zero became NaN: log2(0) = -inf makes the step 0 and 0 / 0 = NaN; keep the exponent at -6 or "
                "more (clamp it), or use torch.frexp", test=_zero_is_nan),
        Mistake("the sign is lost: round |x|, then put x's sign back (torch.copysign(y, x))", test=_sign_lost),
        Mistake("that is the e5m2 grid (2 mantissa bits, 4 values per binade): e4m3 has 3 mantissa bits, "
                "8 values between two powers of two, a step of 2^(e-3)",
                wrong=lambda x: saturate_cast(x, E5M2).float()),
        Mistake("you truncated (rounded toward 0): round to the NEAREST grid value with torch.round",
                wrong=_round(to_int=torch.trunc)),
        Mistake("a tie went away from zero (floor(t + 0.5)): IEEE rounds a tie to the EVEN neighbour, which "
                "torch.round does", wrong=_round(to_int=_half_away)),
        Mistake("subnormals were flushed to zero: below 2^-6 e4m3 still has values, every multiple of 2^-9 "
                "(keep the step at 2^-9 there)", wrong=_round(flush=True)),
        Mistake("below 2^-6 the step must stay 2^-9 (the subnormals): your step kept shrinking, so tiny values "
                "kept digits e4m3 does not have; clamp the exponent at -6", wrong=_round(min_exp=None)),
    ]))
register(Exercise(
    "quantize_rowwise", 14, "quantize_rowwise", _rowwise_cases,
    "w = w.float(); s = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 448  (float32 [N, 1]); "
    "q = (w / s).clamp(-448, 448).to(torch.float8_e4m3fn)",
    nudge="One scale per output channel: which dimension of W [N, K] does a row's amax run over? Which value of the "
          "row should land on 448, and what must a row of zeros get?",
    compare=_compare_fp8,
    mistakes=[
        Mistake("q must be stored in FP8: cast w / s to torch.float8_e4m3fn (.to(torch.float8_e4m3fn))",
                test=_q_not_fp8),
        Mistake("weights use e4m3 (3 mantissa bits, more precision); e5m2 is for gradients",
                test=_q_dtype(E5M2)),
        Mistake("compute in float32 (w.float() first): the scales must be float32 even for a bfloat16 weight",
                test=_in_bfloat16),
        Mistake("your scales are per column (one per input, [1, K]): a row-wise scale belongs to one output "
                "channel, a row of W: amax over dim=1, s is [N, 1]", test=_s_shape(lambda w: (1, w.shape[1]))),
        Mistake("one scale for the whole tensor: row-wise means one scale per row of W (amax over dim=1, "
                "keepdim=True), s is [N, 1]", test=_one_scale),
        Mistake("s has shape [N]: keep the dimension (keepdim=True) so that s is [N, 1] and broadcasts over a row",
                test=_s_shape(lambda w: (w.shape[0],))),
        Mistake("no amax floor: a row of zeros gives s = 0 and q = 0 / 0 = NaN; clamp the amax to at least 1e-12",
                test=_no_amax_floor),
        Mistake("s = amax: you forgot to divide by 448, so q only uses [-1, 1] of e4m3's range; s = amax / 448",
                test=_s_ratio(lambda s: s * E4M3_MAX)),
        Mistake("s is the dequantization scale (w ≈ q · s): s = amax / 448, not 448 / amax",
                test=_s_ratio(lambda s: 1 / s)),
        Mistake("127 is int8's largest value: e4m3's is 448, so s = amax / 448 (with / 127 the row's amax lands on "
                "127 and q uses under a third of e4m3's range)", test=_s_ratio(lambda s: s * E4M3_MAX / 127)),
        Mistake("57344 is e5m2's largest value: weights are e4m3, whose largest is 448, so s = amax / 448",
                test=_s_ratio(lambda s: s * E4M3_MAX / 57344)),
        Mistake("q = w / s (dividing by s maps the row's amax onto 448); you multiplied by s",
                wrong=_rowwise(q_times_s=True)),
        Mistake("the amax is the largest MAGNITUDE, max |w| (.abs() first): a row whose extreme is negative "
                "needs it", wrong=_rowwise(magnitude=lambda w: w)),
    ]))
register(Exercise(
    "scaled_matmul", 14, "scaled_matmul", _matmul_cases,
    "x̂ = q_x.float() · s_x  [M, K],  Ŵ = q_w.float() · s_w  [N, K];  y = x̂ @ Ŵ.t()  (float32 [M, N]); "
    "or y = (q_x.float() @ q_w.float().t()) · s_x · s_w.t()", probe=_fp8_probe,
    nudge="Undo each scale on its own operand (x̂ = q_x · s_x, Ŵ = q_w · s_w): which axis does each scale run "
          "along, and which shape must y = x̂ Ŵᵀ have?",
    mistakes=[
        Mistake("y = x̂ Ŵᵀ is [M, N]: you computed Ŵ x̂ᵀ, its transpose", test=_transposed_output),
        Mistake("compute in float32: the bfloat16 products and sums are rounded to 8 bits of mantissa",
                test=_bf16_result),
        Mistake("dequantizing MULTIPLIES by the scale (x̂ = q · s); quantizing divided by it",
                wrong=_matmul(divide=True)),
        Mistake("the scales were left out: y = (q_x q_wᵀ) ⊙ (s_x s_wᵀ), both of them",
                wrong=_matmul(dx=False, dw=False)),
        Mistake("you dropped s_w, the weight's scales: y = (q_x q_wᵀ) ⊙ (s_x s_wᵀ)", wrong=_matmul(dw=False)),
        Mistake("you dropped s_x, the tokens' scales: y = (q_x q_wᵀ) ⊙ (s_x s_wᵀ)", wrong=_matmul(dx=False)),
        Mistake("s_w belongs to the columns of y (one per output channel n): multiply by s_w.t() [1, N]; "
                "s_w [N, 1] scales row m by s_w[m]", wrong=_matmul(w_axis_wrong=True)),
        Mistake("W is [N, K] (out, in): transpose it, y = x̂ @ Ŵ.t()", wrong=_matmul(transpose=False)),
        Mistake("your y is off by a factor per token (row) and per output channel (column): a scale is missing, "
                "divided instead of multiplied, or applied twice; y[m, n] = s_x[m] · s_w[n] · Σ_k q_x[m, k] q_w[n, k]",
                test=_off_by_row_and_column_factors),
    ]))
register(Exercise(
    "fp8_linear", 14, "fp8_linear", _linear_cases,
    "xq, sx = quantize_rowwise(x)   (one scale per token, s_x [M, 1]);   y = scaled_matmul(xq, sx, wq, sw)",
    probe=_fp8_probe,
    nudge="The weight is ready; the activations must become FP8 too, as they arrive. Which function you wrote "
          "already gives one scale per row, and what is a row of x?",
    mistakes=[
        Mistake("the activations must be quantized too (FP8 × FP8 is what the tensor cores multiply): "
                "quantize x per token with quantize_rowwise", wrong=_linear(quantize_x=False)),
        Mistake("one activation scale for all tokens: a large token sets it, and the small tokens lose their "
                "precision; quantize per token (one scale per row of x)", wrong=_linear(x_granularity="tensor")),
        Mistake("your activation scales are per channel (per column of x, [1, K]): a scale that changes along K "
                "cannot be pulled out of the sum Σ_k; use one per token (row), s_x [M, 1]",
                wrong=_linear(x_granularity="column")),
    ]))
register(Exercise(
    "fp8_model_bytes", 14, "fp8_model_bytes", _bytes_cases,
    "experts = len(moe_layers) · (num_local_experts + 1); each costs 3·D·F bytes + (F + F + D) · scale_bytes "
    "(one scale per output row of gate, up, down); the other num_parameters() − experts·3·D·F weights cost "
    "dtype_bytes each (Maverick: only its MoE layers are FP8)", exact=True,
    nudge="Count the FP8 experts first (which layers, which experts), then what one costs: one byte per weight and "
          "one scale per OUTPUT row of each of its three matrices; everything else at dtype_bytes.",
    mistakes=[
        Mistake("you forgot the scales: each output row of an FP8 matrix also stores one scale of scale_bytes",
                wrong=_bytes(scales=lambda D, F: 0)),
        Mistake("the shared expert is FP8 too: num_local_experts + 1 experts per MoE layer",
                wrong=_bytes(routed_extra=0)),
        Mistake("only the MoE layers (config.moe_layers) hold experts: Maverick's dense layers stay at dtype_bytes",
                wrong=_bytes(layers=lambda c: c.num_hidden_layers)),
        Mistake("the FP8 weights are counted twice: the rest is num_parameters() minus the FP8 weights",
                wrong=_bytes(subtract=False)),
        Mistake("one scale per OUTPUT row: gate and up [F, D] have F rows each, down [D, F] has D: F + F + D "
                "scales per expert (you counted the input columns)", wrong=_bytes(scales=lambda D, F: D + D + F)),
        Mistake("a scale costs scale_bytes, not dtype_bytes",
                wrong=_bytes(scale_size=lambda dtype_bytes, scale_bytes: dtype_bytes)),
    ]))
