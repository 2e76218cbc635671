"""FP8: the two formats and their saturating casts, scales of every granularity, the scaled matmul (torch's
`_scaled_mm` against the emulation), FP8 experts loaded from a transformers-written checkpoint, FP8 training."""

from pathlib import Path

import pytest
import torch

import minillama4
from minillama4 import fp8
from minillama4.fp8 import (E4M3, E5M2, Fp8ExpertBank, Fp8Linear, Fp8Stats, Fp8TrainingExpertBank, Fp8TrainingLinear,
                            dequantize, expected_fp8_bytes, fp8_bytes, fp8_grid, fp8_matmul, fp8_training, quantize,
                            saturate_cast, scaled_mm, scaled_mm_emulated, scaled_mm_supported)
from minillama4.quant import QuantizedExpertBank, quantize_model, weight_bytes
from conftest import rel_err, write_hf_checkpoint

# torch's CPU _scaled_mm is the dequantize-then-matmul emulation, except for two operands of one format with tensor-wise
# scales on CPUs with AMX, where it calls oneDNN's FP8 matmul (its own accumulation order; 0.9 s for 512 × 128 × 384)
AMX = Path("/proc/cpuinfo").is_file() and "amx_int8" in Path("/proc/cpuinfo").read_text()


def g(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ the formats
def test_grids_have_the_documented_range_and_spacing():
    e4, e5 = fp8_grid(E4M3), fp8_grid(E5M2)
    assert e4.numel() == 253 and e5.numel() == 247  # 256 patterns − NaNs (− ±inf) − the second zero
    assert e4.max() == 448 and e5.max() == 57344
    assert e4[e4 > 0].min() == 2 ** -9 and e5[e5 > 0].min() == 2 ** -16
    assert e4[(e4 >= 1) & (e4 < 2)].tolist() == [1 + i / 8 for i in range(8)]  # 3 mantissa bits: 8 per binade
    assert e5[(e5 >= 1) & (e5 < 2)].tolist() == [1 + i / 4 for i in range(4)]
    with pytest.raises(ValueError, match="not an FP8 format"):
        fp8_grid(torch.bfloat16)


def test_saturating_cast_rounds_to_nearest_even_and_clamps():
    x = torch.tensor([1.0625, 1.1875, 500.0, -1e6, 0.001, 2 ** -10, -0.0, float("inf")])
    assert saturate_cast(x, E4M3).float().tolist() == [1.0, 1.25, 448.0, -448.0, 2 ** -9, 0.0, -0.0, 448.0]
    big = torch.tensor([7e4, -1e9])  # past 61440, halfway from 57344 to the next power of two
    assert torch.isinf(big.to(E5M2).float()).all()  # the raw cast overflows to ±inf ...
    assert saturate_cast(big, E5M2).float().tolist() == [57344.0, -57344.0]  # ... the saturating one does not
    assert torch.isnan(saturate_cast(torch.tensor([float("nan")]))).all()  # NaN stays NaN
    x = torch.randn(1000, generator=g()) * 10  # any value lands on the grid point nearest to it
    grid = fp8_grid(E4M3)
    nearest = (x[:, None] - grid[None]).abs().min(1).values
    torch.testing.assert_close((saturate_cast(x).float() - x).abs(), nearest, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ scales
@pytest.mark.parametrize("granularity,scale_shape", [("tensor", (1, 1)), ("row", (256, 1)), ("column", (1, 384)),
                                                     ("block", (2, 3))])
def test_quantize_scales_each_group_by_its_amax(granularity, scale_shape):
    w = torch.randn(256, 384, generator=g()) * torch.logspace(-3, 1, 256)[:, None]  # rows of very different size
    q, s = quantize(w, E4M3, granularity)
    assert q.dtype == E4M3 and s.dtype == torch.float32 and tuple(s.shape) == scale_shape
    bn, bk = 256 // s.shape[0], 384 // s.shape[1]
    amax = w.view(s.shape[0], bn, s.shape[1], bk).abs().amax((1, 3))
    torch.testing.assert_close(s, amax / 448, atol=0, rtol=0)  # s = amax / 448
    assert q.float().abs().max() == 448  # each group's largest value lands on ±448
    w_hat = dequantize(q, s)
    normal = w.abs() >= 2 ** -6 * s.repeat_interleave(bn, 0).repeat_interleave(bk, 1)  # in e4m3's normal range
    assert ((w_hat - w).abs()[normal] <= w.abs()[normal] / 16 + 1e-12).all()  # at most half a step: 2^-4 of |w|


def test_finer_scales_are_closer_when_rows_differ_in_size():
    """Rows spanning 10^6 in size (e4m3's normal range spans 448 / 2^-6 ≈ 3·10^4): one scale for the whole tensor
    flushes the smallest rows to zero; one per row or per 128 × 128 block keeps every row at e4m3's precision."""
    w = torch.randn(256, 256, generator=g()) * torch.logspace(-6, 0, 256)[:, None]
    err = {gr: ((dequantize(*quantize(w, E4M3, gr)) - w).norm(dim=1) / w.norm(dim=1)).max().item()
           for gr in ("tensor", "row", "block")}
    assert err["tensor"] == 1.0  # the worst row is lost entirely (measured: row 0.030, block 0.031)
    assert err["row"] <= err["block"] < 0.04


def test_zero_groups_and_bad_input():
    w = torch.randn(4, 8, generator=g())
    w[1] = 0
    q, s = quantize(w, E4M3, "row")
    assert torch.isfinite(s).all() and s[1, 0] > 0 and (q[1].float() == 0).all()
    with pytest.raises(ValueError, match="2-D float tensor"):
        quantize(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="2-D float tensor"):
        quantize(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="granularity must be one of"):
        quantize(w, E4M3, "channel")
    with pytest.raises(ValueError, match=r"divisible by block=128, got \[4, 8\]"):
        quantize(w, E4M3, "block")
    with pytest.raises(ValueError, match="not an FP8 format"):
        quantize(w, torch.int8)
    with pytest.raises(ValueError, match=r"do not tile a \[4, 8\] tensor"):
        dequantize(q, torch.ones(3, 1))


# ------------------------------------------------------------------------------------------------ the scaled matmul
@pytest.mark.parametrize("M,K,N", [(1, 128, 256), (7, 96, 48), (33, 256, 64), (300, 128, 512)])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("a_dtype", [E4M3, E5M2])
def test_torch_scaled_mm_equals_the_emulation(M, K, N, granularity, a_dtype):
    """torch's `_scaled_mm` on this CPU against the emulation: the same bits (float32 and bfloat16 outputs), except
    two operands of one format with tensor-wise scales on AMX CPUs, where torch calls a oneDNN FP8 kernel instead:
    there the two differ only in the float32 accumulation order, K · 2^-24 of the size of the terms."""
    for out_dtype in (torch.float32, torch.bfloat16):
        assert scaled_mm_supported("cpu", a_dtype, E4M3, out_dtype, granularity == "row")
    aq, sa = quantize(torch.randn(M, K, generator=g(1)), a_dtype, granularity)
    bq, sb = quantize(torch.randn(N, K, generator=g(2)), E4M3, granularity)
    for out_dtype in (torch.float32, torch.bfloat16):
        fast = torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb.t().contiguous(), out_dtype=out_dtype)
        emulated = scaled_mm_emulated(aq, sa, bq, sb, out_dtype)
        assert fast.dtype == emulated.dtype == out_dtype and fast.shape == (M, N)
        if granularity == "row" or a_dtype != E4M3 or not AMX:
            assert torch.equal(fast, emulated)
        else:
            # plus, for a bfloat16 output, one rounding step of bf16 where the two float32 sums straddle a tie
            torch.testing.assert_close(fast, emulated, atol=K * 2 ** -24 * emulated.abs().max().item(),
                                       rtol=2 ** -7 if out_dtype == torch.bfloat16 else 0)
    # and both are y = (q_a s_a)(q_b s_b)ᵀ: against float64
    want = (dequantize(aq, sa).double() @ dequantize(bq, sb).double().t())
    torch.testing.assert_close(scaled_mm(aq, sa, bq, sb).double(), want, atol=K * 2 ** -23 * want.abs().max().item(),
                               rtol=0)


def _no_torch_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch._scaled_mm was called on CPU")
    monkeypatch.setattr(torch, "_scaled_mm", refuse)


@pytest.mark.parametrize("granularity", ["row", "tensor", "block"])
@pytest.mark.parametrize("a_dtype,b_dtype", [(E4M3, E4M3), (E5M2, E4M3), (E4M3, E5M2), (E5M2, E5M2)])
def test_scaled_mm_on_cpu_is_the_emulation(granularity, a_dtype, b_dtype, monkeypatch):
    """On CPU `scaled_mm` never calls torch's kernel (on AMX CPUs its oneDNN path for same-format tensor-wise operands
    took 0.9 s for 512 × 128 × 384): every format pair and scale kind gives the emulation's bits, on every CPU."""
    _no_torch_kernel(monkeypatch)
    aq, sa = quantize(torch.randn(256, 128, generator=g(1)), a_dtype, granularity)
    bq, sb = quantize(torch.randn(384, 128, generator=g(2)), b_dtype, granularity)
    for out_dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(scaled_mm(aq, sa, bq, sb, out_dtype), scaled_mm_emulated(aq, sa, bq, sb, out_dtype))


def test_fp8_training_matmuls_on_cpu_are_the_emulation(monkeypatch):
    """The three matmuls of an FP8 training step at a training run's shapes (chapter 14's ci run: 512 tokens, width
    128, experts 384 wide, and an expert's uneven share of the tokens): e4m3 × e4m3 forward, e5m2 × e4m3 backward,
    all with tensor-wise scales, all through the emulation: the same bits on every CPU, and fast."""
    _no_torch_kernel(monkeypatch)
    for M, K, N in [(512, 128, 384), (512, 128, 128), (37, 128, 768), (37, 384, 128)]:
        x = torch.randn(M, K, generator=g(M), requires_grad=True)
        w = (torch.randn(N, K, generator=g(N)) * 0.02).requires_grad_()
        gy = torch.randn(M, N, generator=g(K)) * 1e-3
        fp8_matmul(x, w).backward(gy)
        xq, sx = quantize(x.detach(), E4M3, "tensor")
        wq, sw = quantize(w.detach(), E4M3, "tensor")
        gq, sg = quantize(gy, E5M2, "tensor")
        assert torch.equal(fp8_matmul(x.detach(), w.detach()), scaled_mm_emulated(xq, sx, wq, sw))
        assert torch.equal(x.grad, scaled_mm_emulated(gq, sg, wq.t(), sw))
        assert torch.equal(w.grad, scaled_mm_emulated(gq.t(), sg, xq.t(), sx))


def test_block_scales_take_the_emulation():
    aq, sa = quantize(torch.randn(128, 256, generator=g(1)), E4M3, "block")
    bq, sb = quantize(torch.randn(256, 256, generator=g(2)), E4M3, "block")
    y = scaled_mm(aq, sa, bq, sb)
    assert torch.equal(y, dequantize(aq, sa) @ dequantize(bq, sb).t().contiguous())
    with pytest.raises(ValueError, match=r"a \[M, K\] and b \[N, K\]"):
        scaled_mm(aq, sa, bq[:, :128], sb)
    with pytest.raises(ValueError, match="not an FP8 format"):
        scaled_mm(aq.float(), sa, bq, sb)


# ------------------------------------------------------------------------------------------------ FP8 experts
def test_fp8_linear_quantizes_weights_per_row_and_activations_per_token():
    w = torch.randn(96, 64, generator=g()) * 0.05
    m, err = Fp8Linear.from_float(w, "w")
    q, s = quantize(w, E4M3, "row")
    assert torch.equal(m.qweight.view(torch.uint8), q.view(torch.uint8)) and torch.equal(m.scales, s)
    assert err.bytes_after == m.nbytes() == fp8_bytes(96, 64) == 96 * 64 + 96 * 4
    assert 0.01 < err.rel_rms < 0.04  # e4m3: ≈ 2.6% on Gaussian weights
    x = torch.randn(2, 5, 64, generator=g(1))
    xq, sx = quantize(x.reshape(10, 64), E4M3, "row")  # one scale per token
    torch.testing.assert_close(m(x), scaled_mm(xq, sx, q, s).view(2, 5, 96), atol=0, rtol=0)
    assert rel_err(x @ w.t(), m(x)) < 0.06 and m(x.bfloat16()).dtype == torch.bfloat16
    # a token with one huge value: its amax is capped at 1200, so it saturates there and the token keeps its others
    x1 = torch.randn(1, 64, generator=g(2))
    x1[0, 0] = 5000.0
    xq1, sx1 = quantize(x1, E4M3, "row", amax_cap=fp8.ACT_AMAX_CAP)
    assert sx1.item() == pytest.approx(1200 / 448) and dequantize(xq1, sx1)[0, 0] == pytest.approx(1200)
    with pytest.raises(ValueError, match=r"shape \[96, 32\], expected \[96, 64\]"):
        m.set_weight(torch.randn(96, 32))
    with pytest.raises(RuntimeError, match="no weight yet"):
        Fp8Linear(64, 96)(x)
    with pytest.raises(RuntimeError, match="converted to torch.bfloat16"):
        m.bfloat16()(x.bfloat16())  # .to(dtype) casts FP8 buffers too


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # widths that int4 also takes (multiples of 128), the real init scale, so int4 and FP8 can be compared
    return write_hf_checkpoint(tmp_path_factory.mktemp("fp8") / "scout", hidden_size=128, intermediate_size=128,
                               initializer_range=0.02, vocab_size=300)


def test_fp8_model_is_closer_to_float_than_int4(ckpt):
    ref = minillama4.from_pretrained(ckpt)
    f8 = minillama4.from_pretrained(ckpt, quantize="fp8")
    q4 = minillama4.from_pretrained(ckpt, quantize="int4")
    x = torch.randint(3, 300, (4, 64), generator=g())
    with torch.no_grad():
        want, got8, got4 = ref(x), f8(x), q4(x)
    err8, err4 = rel_err(want, got8), rel_err(want, got4)
    rms8, rms4 = ((got8 - want).norm() / want.norm()).item(), ((got4 - want).norm() / want.norm()).item()
    same8 = (want.argmax(-1) == got8.argmax(-1)).float().mean().item()
    print(f"fp8: max logit error {err8:.4f} of max |logit|, relative RMS {rms8:.4f}, same greedy token {same8:.1%}; "
          f"int4: {err4:.4f}, {rms4:.4f}")
    assert 0 < err8 < 0.07 and same8 > 0.9  # measured 0.047, RMS 0.020 and 96.5% (int4: 0.074, 0.056, 95%)
    assert err8 < err4 and rms8 < rms4 / 2
    assert all(0.01 < e.rel_rms < 0.04 for e in f8.quant_report)  # e4m3, row-wise: ≈ 2.6% per matrix


def test_fp8_loader_equals_quantize_model_and_covers_routed_and_shared_experts(ckpt, tmp_path):
    loaded = minillama4.from_pretrained(ckpt, quantize="fp8")
    model = minillama4.from_pretrained(ckpt)
    report = quantize_model(model, quantize="fp8")
    L, E = model.config.num_hidden_layers, model.config.num_local_experts
    assert len(report) == L * (2 * E + 3)
    assert sorted(e.name for e in report) == sorted(e.name.removeprefix("model.") for e in loaded.quant_report)
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype and torch.equal(sd_a[k].view(torch.uint8), sd_b[k].view(torch.uint8)), k
    for layer in loaded.layers:
        moe = layer.feed_forward
        assert isinstance(moe.experts, Fp8ExpertBank) and isinstance(moe.shared_expert.up_proj, Fp8Linear)
        assert moe.experts.gate_up[0].qweight.dtype == E4M3 and moe.experts.gate_up[0].scales.shape == (256, 1)
        assert layer.self_attn.q_proj.weight.dtype == torch.float32 and moe.router.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, quantize="int4")
    # streamed from shards: the same model
    sharded = write_hf_checkpoint(tmp_path / "sharded", hidden_size=128, intermediate_size=128, initializer_range=0.02,
                                  vocab_size=300, max_shard_size="200KB")
    assert len(list(sharded.glob("*.safetensors"))) > 2
    streamed = minillama4.from_pretrained(sharded, quantize="fp8", progress=False)
    for k, v in streamed.state_dict().items():
        assert torch.equal(v.view(torch.uint8), sd_b[k].view(torch.uint8)), k


def test_fp8_weight_bytes_are_as_computed(ckpt):
    cfg = minillama4.load_config(ckpt)
    D, F_, L, E = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_local_experts
    experts = L * (E + 1) * 3 * D * F_
    rows = L * (E + 1) * (2 * F_ + D)  # one scale per output row: gate and up (F each), down (D)
    for dtype, nbytes in ((None, 4), (torch.bfloat16, 2)):
        m = minillama4.from_pretrained(ckpt, dtype=dtype, quantize="fp8")
        by_hand = experts + rows * 4 + (cfg.num_parameters() - experts) * nbytes
        assert weight_bytes(m) == expected_fp8_bytes(cfg, nbytes) == by_hand
        assert m.embed_tokens.weight.dtype == (dtype or torch.float32)
    # Scout: ~103 B expert weights at one byte + the rest in bf16 ≈ 113 GB: two 80 GB GPUs, as Meta's README says
    scout = minillama4.Llama4Config.preset("scout")
    assert 112e9 < expected_fp8_bytes(scout) < 114e9


def test_fp8_works_at_any_width_and_bad_names_are_errors(tmp_path):
    path = write_hf_checkpoint(tmp_path / "narrow", initializer_range=0.02)  # hidden 64, expert FFN 48: not int4's
    ref = minillama4.from_pretrained(path)
    f8 = minillama4.from_pretrained(path, quantize="fp8")
    x = torch.randint(3, 160, (2, 37), generator=g())
    with torch.no_grad():
        assert rel_err(ref(x), f8(x)) < 0.05  # measured 0.012
    with pytest.raises(ValueError, match="quantize='fp4' is not supported; choose None, 'int4' or 'fp8'"):
        minillama4.from_pretrained(path, quantize="fp4")
    with pytest.raises(ValueError, match="quantize='FP8' is not supported; choose one of 'int4', 'fp8'"):
        quantize_model(ref, quantize="FP8")
    assert not any(isinstance(layer.feed_forward.experts, QuantizedExpertBank) for layer in ref.layers)


# ------------------------------------------------------------------------------------------------ FP8 training
def test_fp8_matmul_forward_and_backward_are_the_scaled_products():
    x = torch.randn(48, 64, generator=g(), requires_grad=True)
    w = (torch.randn(32, 64, generator=g(1)) * 0.02).requires_grad_()
    gy = torch.randn(48, 32, generator=g(2)) * 1e-4
    stats = Fp8Stats()
    y = fp8_matmul(x, w, stats=stats)
    y.backward(gy)
    xq, sx = quantize(x.detach(), E4M3, "tensor")
    wq, sw = quantize(w.detach(), E4M3, "tensor")
    gq, sg = quantize(gy, E5M2, "tensor")
    x_hat, w_hat, g_hat = dequantize(xq, sx), dequantize(wq, sw), dequantize(gq, sg)
    torch.testing.assert_close(y, x_hat @ w_hat.t(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x.grad, g_hat @ w_hat, atol=1e-9, rtol=1e-5)
    torch.testing.assert_close(w.grad, g_hat.t() @ x_hat, atol=1e-9, rtol=1e-5)
    assert rel_err(gy.t() @ x.detach(), w.grad) < 0.15  # e5m2 gradients: a few percent from the float32 ones
    assert stats.counts["x"][0] == x.numel() and stats.counts["grad"][0] == gy.numel()
    assert all(f["overflow"] == 0 for f in stats.fractions().values())  # scaled: nothing saturates


def test_without_scaling_small_gradients_underflow_in_e5m2():
    x = torch.randn(48, 64, generator=g(), requires_grad=True)
    w = (torch.randn(32, 64, generator=g(1)) * 0.02).requires_grad_()
    gy = torch.randn(48, 32, generator=g(2)) * 1e-6  # the size of a real model's output gradients
    stats = Fp8Stats()
    fp8_matmul(x, w, scaled=False, stats=stats).backward(gy)
    f = stats.fractions()
    assert f["grad"]["underflow"] > 0.9  # below e5m2's smallest value 2^-16 ≈ 1.5e-5: flushed to zero
    assert x.grad.abs().max() == 0 and w.grad.abs().max() == 0  # no gradient left
    assert 0.005 < f["w"]["underflow"] < 0.1  # weights of std 0.02: the smallest fall under e4m3's 2^-9 too


def test_fp8_training_swaps_the_block_linears_and_keeps_the_parameters():
    from minillama4.train import TrainConfig, lm_loss

    torch.manual_seed(0)
    cfg = minillama4.Llama4Config.preset("toy").replace(num_hidden_layers=2)
    ref = minillama4.Llama4(cfg)
    model = minillama4.Llama4(cfg)
    model.load_state_dict(ref.state_dict())
    params = {n: p for n, p in model.named_parameters()}
    stats = Fp8Stats()
    assert fp8_training(model, stats=stats) is model
    assert {n: p for n, p in model.named_parameters()} == params  # same objects: the optimizer keeps working
    layer = model.layers[0]
    assert type(layer.self_attn.q_proj) is Fp8TrainingLinear and type(layer.feed_forward.experts) is Fp8TrainingExpertBank
    assert type(layer.feed_forward.shared_expert.down_proj) is Fp8TrainingLinear
    assert type(model.lm_head) is torch.nn.Linear and layer.feed_forward.router.weight.dtype == torch.float32
    x = torch.randint(0, cfg.vocab_size, (4, 32), generator=g())
    y = torch.randint(0, cfg.vocab_size, (4, 32), generator=g(1))
    tc = TrainConfig()
    _, ce8, _ = lm_loss(model, x, y, tc)
    _, ce, _ = lm_loss(ref, x, y, tc)
    ce8.backward()
    ce.backward()
    assert abs(ce8.item() - ce.item()) < 0.01  # measured 0.001-0.002
    assert all(params[n].grad is not None and params[n].grad.dtype == torch.float32 for n in params)
    grad8 = torch.cat([params[n].grad.flatten() for n, _ in ref.named_parameters()])
    grad = torch.cat([p.grad.flatten() for _, p in ref.named_parameters()])
    assert ((grad8 - grad).norm() / grad.norm()).item() < 0.2  # measured 0.12 (a few tokens change expert)
    assert stats.counts["grad"][0] > 0 and stats.counts["w"][0] > 0


# ------------------------------------------------------------------------------------------------ the chapter's numbers
def test_training_in_each_precision_starts_equal_and_counts_what_the_casts_lose():
    """A few steps of each variant of the training comparison (the real runs are the chapter's, cached): the same
    init and batches, so the first losses agree; FP8 without scaling flushes a large share of the output gradients
    to zero (below e5m2's smallest value, 2^-16), with scaling almost none."""
    from dataclasses import replace

    from minillama4.course.data import course_tokens
    from minillama4.course.fp8_experiments import PRECISIONS, train_in_precision, training_setup

    config, tc = training_setup("ci")
    config = config.replace(num_hidden_layers=2)
    tc = replace(tc, steps=3, warmup_steps=1, eval_every=3, eval_batches=1)  # ci's batches: 8 × 64 tokens
    ids = course_tokens("val", vocab_size=config.vocab_size).ids
    runs = {p: train_in_precision(p, config, tc, ids[:8000], ids[8000:]) for p in PRECISIONS}
    first = {p: r["history"]["train_loss"][0] for p, r in runs.items()}
    assert all(abs(first[p] - first["float32"]) < 0.02 for p in PRECISIONS), first
    assert runs["float32"]["fp8_stats"] is None and runs["bf16"]["fp8_stats"] is None
    scaled, raw = runs["fp8"]["fp8_stats"], runs["fp8 unscaled"]["fp8_stats"]
    assert raw["grad"]["underflow"] > 0.3 > 0.001 > scaled["grad"]["underflow"]  # measured 0.45 and < 1e-5
    assert raw["w"]["underflow"] > 0.01 > scaled["w"]["underflow"]
    with pytest.raises(ValueError, match="precision must be one of"):
        train_in_precision("fp16", config, tc, ids, ids)


def test_statistics_and_errors_of_each_scaling_choice():
    from minillama4.course.fp8_experiments import SCHEMES, scaling_statistics

    torch.manual_seed(0)
    cfg = minillama4.Llama4Config.preset("toy").replace(num_hidden_layers=1)
    model = minillama4.Llama4(cfg)
    st = scaling_statistics(model, torch.randint(0, cfg.vocab_size, (2, 64), generator=g()))
    E = cfg.num_local_experts
    assert len(st["weights"]) == 4 + 2 * E + 3  # attention q, k, v, o; gate_up and down per expert; shared
    assert [a["name"] for a in st["activations"]] == ["layers.0.attention input", "layers.0.o_proj input",
                                                      "layers.0.moe input", "layers.0.shared down_proj input"]
    w = next(r for r in st["weights"] if r["name"] == "layers.0.experts.0.gate_up")
    assert w["shape"] == [2 * cfg.intermediate_size, cfg.hidden_size] and set(w["errors"]) == set(SCHEMES)
    assert 2.7 < w["kurtosis"] < 3.3 and 3 < w["crest"] < 6  # Gaussian init
    e = w["errors"]
    assert 0.02 < e["e4m3 row"] < 0.03 < 0.04 < e["e5m2 row"] < 0.06 < 0.09 < e["int4 g128"] < 0.12
    k = next(r for r in st["weights"] if r["name"] == "layers.0.self_attn.k_proj")  # [64, 128]: no 128 × 128 block
    assert k["errors"]["e4m3 block"] is None and k["errors"]["e4m3 row"] is not None
    assert len(st["channel_amax"]["layers.0.moe input"]) == cfg.hidden_size


def test_one_outlier_breaks_int4_long_before_fp8():
    from minillama4.course.fp8_experiments import outlier_sweep

    x = torch.randn(256, 128, generator=g())
    ch = outlier_sweep(x, factors=(1, 10, 1e3, 1e6), axis="column")["errors"]
    assert ch["int4 g128"][1] > 0.3  # one channel 10× larger: int4's uniform grid loses the others
    assert max(ch["e4m3 tensor"][:3]) < 0.03 and ch["e4m3 tensor"][3] == 1.0  # FP8 holds to 10^3, not to 10^6
    assert max(ch["e4m3 column"]) < 0.03 and max(ch["e5m2 row"]) < 0.06  # its own scale; e5m2's wider range
    tok = outlier_sweep(x, factors=(1, 1e6), axis="row")["errors"]
    assert max(tok["e4m3 row"]) < 0.03 and tok["e4m3 tensor"][1] == 1.0  # a token outlier: per-token scales
    with pytest.raises(ValueError, match="axis must be"):
        outlier_sweep(x, axis="channel")


def test_h100_arithmetic():
    from minillama4.course.fp8_experiments import decode_bytes_per_token, expert_bytes, h100_arithmetic

    h = h100_arithmetic()
    assert h["fp8_over_bf16_flops"] == pytest.approx(2, rel=1e-3)
    assert h["behemoth_mfu_fp8"] == pytest.approx(390 / 1978.9)
    scout, mav = h["models"]["scout"], h["models"]["maverick"]
    assert [scout[p]["gpus_80gb"] for p in ("bf16", "fp8", "int4")] == [3, 2, 1]  # Meta's README: FP8 2, int4 1
    assert mav["fp8"]["gpus_80gb"] <= 8 < mav["bf16"]["gpus_80gb"]  # Maverick FP8 fits one 8-GPU host, bf16 not
    assert scout["fp8"]["decode_tokens_per_s"] / scout["bf16"]["decode_tokens_per_s"] == pytest.approx(1.6, abs=0.05)
    assert scout["prefill_tokens_per_s"]["fp8"] == pytest.approx(2 * scout["prefill_tokens_per_s"]["bf16"], rel=1e-3)
    cfg = minillama4.Llama4Config.preset("toy")  # by hand: 4 layers, each attention + router + norms + 2 experts
    D, F_, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    attn = 2 * D * 4 * 32 + 2 * D * 2 * 32
    per_layer = attn + 2 * D + D * cfg.num_local_experts
    assert decode_bytes_per_token(cfg, "fp8") == 4 * (per_layer * 2 + 2 * expert_bytes(cfg, "fp8")) + (V * D + D) * 2
    assert expert_bytes(cfg, "fp8") == 3 * D * F_ + (2 * F_ + D) * 4
    with pytest.raises(ValueError, match="precision must be"):
        expert_bytes(cfg, "fp4")
