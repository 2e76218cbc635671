"""int4 weight-only quantization: the arithmetic, the packing, the matmul paths, and a whole model loaded in int4."""

import pytest
import torch

import minillama4
from minillama4.ffn import ExpertBank
from minillama4.quant import (Int4ExpertBank, Int4Linear, dequantize_int4, expected_int4_bytes, int4_bytes,
                              kernel_available, pack_int4, quantize_int4, quantize_int4_asymmetric, quantize_model,
                              summarize, unpack_int4, weight_bytes)
from conftest import rel_err, write_hf_checkpoint

needs_cpu_kernel = pytest.mark.skipif(not kernel_available("cpu"), reason="this torch has no CPU int4 kernel")


def g(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ arithmetic
def test_pack_puts_even_k_in_the_low_nibble_as_q_plus_8():
    q = torch.tensor([[-8, 7, 0, -1, 3, -5]], dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (1, 3)
    assert packed.tolist() == [[0 | (15 << 4), 8 | (7 << 4), 11 | (3 << 4)]]
    q = torch.randint(-8, 8, (7, 64), generator=g(), dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(q)), q)
    with pytest.raises(ValueError, match=r"outside the int4 range \[-8, 7\]: \[-8, 8\]"):
        pack_int4(torch.tensor([[8, -8]], dtype=torch.int8))
    with pytest.raises(ValueError, match="even last dimension"):
        pack_int4(torch.zeros(2, 3, dtype=torch.int8))


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_quantize_is_symmetric_groupwise_absmax_over_8(group_size):
    w = torch.randn(16, 256, generator=g())
    q, s = quantize_int4(w, group_size)
    assert q.dtype == torch.int8 and s.shape == (16, 256 // group_size) and s.dtype == torch.float32
    groups = w.view(16, -1, group_size)
    torch.testing.assert_close(s, groups.abs().amax(-1) / 8)  # s = max|w| / 8
    assert int(q.min()) >= -8 and int(q.max()) <= 7
    w_hat = dequantize_int4(q, s)
    err = (w_hat - w).view(16, -1, group_size).abs()
    inside = groups.abs() < 7.5 * s[..., None]  # not clipped at +7: error at most half a step
    assert (err[inside] <= s[..., None].expand_as(err)[inside] / 2 + 1e-6).all()
    assert (err <= s[..., None] + 1e-6).all()  # clipped (+max maps to 8 → 7): at most one step
    # the largest |w| of a group: exact when negative (-8 s), clipped to +7 s when positive
    idx = groups.abs().argmax(-1, keepdim=True)
    top, top_hat = groups.gather(-1, idx), w_hat.view(16, -1, group_size).gather(-1, idx)
    neg = top < 0
    torch.testing.assert_close(top_hat[neg], top[neg])
    torch.testing.assert_close(top_hat[~neg], 7 * s[..., None][~neg])


@pytest.mark.parametrize("group_size", [32, 128])
def test_asymmetric_maps_each_groups_min_and_max_onto_the_16_levels(group_size):
    w = torch.randn(16, 256, generator=g()) + torch.linspace(-1, 2, 16)[:, None]  # rows off-centre: min ≠ −max
    q, s, z = quantize_int4_asymmetric(w, group_size)
    groups = w.view(16, -1, group_size)
    lo, hi = groups.amin(-1), groups.amax(-1)
    torch.testing.assert_close(s, (hi - lo) / 15)  # s = (max − min) / 15
    torch.testing.assert_close(z, lo + 8 * s)  # z = min + 8 s
    q_NGg = q.view(16, -1, group_size)
    assert (q_NGg.amin(-1) == -8).all() and (q_NGg.amax(-1) == 7).all()  # every group uses both ends
    w_hat = dequantize_int4(q, s, zeros=z)
    err = (w_hat - w).view(16, -1, group_size).abs()
    assert (err <= s[..., None] / 2 + 1e-5).all()  # nothing is clipped: at most half a step everywhere
    torch.testing.assert_close(dequantize_int4(q, s), w_hat - z.repeat_interleave(group_size, 1))  # z is added
    q_sym, s_sym = quantize_int4(w, group_size)
    assert rel_err(w, w_hat) < 0.8 * rel_err(w, dequantize_int4(q_sym, s_sym))  # off-centre groups: a finer grid


def test_smaller_groups_give_smaller_errors_and_cost_more_bytes():
    w = torch.randn(64, 512, generator=g()) * torch.logspace(-2, 0, 512)  # columns of very different magnitude
    errs = [Int4Linear.from_float(w, gs, "plain")[1] for gs in (32, 128, 512)]
    assert errs[0].rel_rms < errs[1].rel_rms < errs[2].rel_rms
    assert errs[0].bytes_after > errs[1].bytes_after > errs[2].bytes_after
    assert errs[1].bytes_after == int4_bytes(64, 512, 128) == 64 * 512 // 2 + 64 * 4 * 4
    assert errs[1].bytes_before == 64 * 512 * 4


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="K=100 is not a multiple of group_size=128"):
        quantize_int4(torch.randn(4, 100))
    with pytest.raises(ValueError, match="2-D weight"):
        quantize_int4(torch.randn(4, 4, 128))
    with pytest.raises(ValueError, match="in_features=48 is not a multiple of group_size=128"):
        Int4Linear(48, 16)
    with pytest.raises(ValueError, match="layout must be"):
        Int4Linear(128, 16, layout="fast")
    m = Int4Linear(128, 16)
    with pytest.raises(ValueError, match=r"shape \[16, 256\], expected \[16, 128\]"):
        m.set_weight(torch.randn(16, 256))
    with pytest.raises(RuntimeError, match="no weight yet"):
        m(torch.randn(2, 128))


# ------------------------------------------------------------------------------------------------ matmul paths
def test_plain_matmul_is_the_dequantized_reference_for_any_leading_shape():
    w = torch.randn(48, 256, generator=g())
    m, err = Int4Linear.from_float(w, 128, "plain")
    w_hat = dequantize_int4(*quantize_int4(w, 128))
    torch.testing.assert_close(m.dequantize(), w_hat, atol=0, rtol=0)
    x = torch.randn(2, 5, 256, generator=g(1))
    torch.testing.assert_close(m(x), x @ w_hat.t())
    assert m(x.bfloat16()).dtype == torch.bfloat16
    assert err.rel_rms == pytest.approx(((w_hat - w).norm() / w.norm()).item())


@needs_cpu_kernel
@pytest.mark.parametrize("rows", [1, 3, 16, 40])
def test_torch_int4_kernel_layout_matches_the_reference(rows):
    """The 'kernel' layout (torch's own packing, on CPU here; the CUDA path differs only in the converter): the
    measured nibble permutation gives back exactly the quantized weights, and the kernel's matmul (few rows) and
    the dequantize-then-matmul path (many rows) both equal x Ŵᵀ."""
    w = torch.randn(64, 384, generator=g())
    m, _ = Int4Linear.from_float(w, 128, "kernel")
    q, s = quantize_int4(w, 128, scale_dtype=torch.bfloat16)  # the kernels take bfloat16 scales
    torch.testing.assert_close(m.dequantize(), dequantize_int4(q, s), atol=0, rtol=0)
    assert m.nbytes() == int4_bytes(64, 384, 128)  # same bytes as the plain layout
    x = torch.randn(rows, 384, generator=g(2))
    torch.testing.assert_close(m(x), x @ dequantize_int4(q, s).t(), atol=1e-4, rtol=1e-4)
    xb = x.bfloat16()
    assert rel_err(xb.float() @ dequantize_int4(q, s).t(), m(xb)) < 1e-2


def test_a_transposed_bf16_expert_is_stored_as_the_textbook_formula_says():
    """The loader quantizes each expert from a transposed bf16 view of the file ([D, 2F] → [2F, D]) and set_weight
    takes shortcuts for speed (one contiguous float32 copy, max|w| from aminmax, packing in int8). The stored bytes
    are exactly those of the formulas in the module docstring, computed the plain way."""
    E, D, Fh = 3, 256, 128
    w_EKN = (torch.randn(E, D, 2 * Fh, generator=g()) * 0.02).to(torch.bfloat16)
    w_EKN[1, :128, 5] = 0  # an all-zero group: the 1e-6 floor
    w_EKN[2, :, 7] -= 1  # a row whose groups are led by a negative weight
    bank = Int4ExpertBank(E, D, Fh, 128, "plain")
    errs = bank.load_gate_up(w_EKN)
    for e in range(E):
        w_NGg = w_EKN[e].t().float().reshape(2 * Fh, D // 128, 128)
        s_NG = (w_NGg.abs().amax(-1) / 8).clamp_min(1e-6)  # s = max|w| / 8
        u_NK = (torch.round(w_NGg / s_NG[..., None]).clamp(-8, 7) + 8).reshape(2 * Fh, D).to(torch.uint8)
        assert torch.equal(bank.gate_up[e].scales, s_NG)
        assert torch.equal(bank.gate_up[e].qweight, u_NK[:, 0::2] + 16 * u_NK[:, 1::2])  # byte = u_2i + 16 u_2i+1
        w_hat = ((u_NK.float() - 8).reshape_as(w_NGg) * s_NG[..., None]).reshape(2 * Fh, D)
        want = ((w_hat - w_EKN[e].t().float()).norm() / w_EKN[e].float().norm()).item()
        assert errs[e].rel_rms == pytest.approx(want, rel=1e-4) and errs[e].bytes_before == D * 2 * Fh * 2


@pytest.mark.parametrize("layout", ["plain", pytest.param("kernel", marks=needs_cpu_kernel)])
def test_asymmetric_linear_stores_a_zero_per_group_and_multiplies_by_its_weights(layout):
    w = torch.randn(64, 256, generator=g()) + 0.5
    m, err = Int4Linear.from_float(w, 64, layout, symmetric=False)
    scale_dtype = torch.float32 if layout == "plain" else torch.bfloat16  # the kernels take bfloat16 pairs
    q, s, z = quantize_int4_asymmetric(w, 64, scale_dtype)
    w_hat = dequantize_int4(q, s, zeros=z)
    torch.testing.assert_close(m.dequantize(), w_hat, atol=0, rtol=0)
    x = torch.randn(3, 256, generator=g(1))
    torch.testing.assert_close(m(x), x @ w_hat.t(), atol=1e-4, rtol=1e-4)
    # plain: one more float32 per group; kernel: the zero fills the (scale, zero) pair that is there anyway
    extra = 64 * 4 * 4 if layout == "plain" else 0
    assert m.nbytes() == int4_bytes(64, 256, 64) + extra and "symmetric=False" in repr(m)
    assert err.rel_rms < Int4Linear.from_float(w, 64, layout)[1].rel_rms


def test_asymmetric_model_keeps_each_experts_zeros(ckpt):
    """quantize_model(symmetric=False): the bank stacks the zeros with the other buffers, expert by expert."""
    model = minillama4.from_pretrained(ckpt)
    ref = ExpertBank(model.config.num_local_experts, 128, 128)
    old = model.layers[0].feed_forward.experts
    report = quantize_model(model, layout="plain", symmetric=False)
    bank = model.layers[0].feed_forward.experts
    z0, z1 = bank.gate_up[0].zeros, bank.gate_up[1].zeros
    assert z1.shape == (256, 1) and z1.data_ptr() == z0.data_ptr() + z0.nbytes  # views of one stacked [E, …] buffer
    gu_hat, dn_hat = bank.dequantize()
    for e in range(bank.num_experts):
        q, s, z = quantize_int4_asymmetric(old.gate_up_proj[e].detach().t(), 128)
        torch.testing.assert_close(gu_hat[e], dequantize_int4(q, s, zeros=z).t(), atol=0, rtol=0)
    with torch.no_grad():
        ref.gate_up_proj.copy_(gu_hat)
        ref.down_proj.copy_(dn_hat)
    x, counts = torch.randn(5, 128, generator=g(3)), torch.tensor([1, 2, 0, 2])
    torch.testing.assert_close(bank.forward_sorted(x, counts), ref.forward_sorted(x, counts))
    sym = quantize_model(minillama4.from_pretrained(ckpt), layout="plain")
    assert sum(e.bytes_after for e in report) > sum(e.bytes_after for e in sym)  # the zeros cost bytes


def test_expert_bank_equals_the_dequantized_bank_and_reads_only_chosen_experts():
    torch.manual_seed(0)
    E, D, Fh = 4, 128, 128
    gate_up, down = torch.randn(E, D, 2 * Fh) * 0.05, torch.randn(E, Fh, D) * 0.05
    bank = Int4ExpertBank(E, D, Fh, 128, "plain")
    errs = bank.load_gate_up(gate_up) + bank.load_down(down)
    assert len(errs) == 2 * E and all(0.05 < e.rel_rms < 0.15 for e in errs)
    gu_hat, dn_hat = bank.dequantize()
    assert gu_hat.shape == gate_up.shape and dn_hat.shape == down.shape
    ref = ExpertBank(E, D, Fh)
    with torch.no_grad():
        ref.gate_up_proj.copy_(gu_hat)
        ref.down_proj.copy_(dn_hat)
    x = torch.randn(7, D)
    counts = torch.tensor([2, 0, 4, 1])
    torch.testing.assert_close(bank.forward_sorted(x, counts), ref.forward_sorted(x, counts))
    # a decode step routed to expert 2: the other experts' weights are never touched (here: they have none)
    for e in (0, 1, 3):
        bank.gate_up[e].qweight = torch.empty(0, dtype=torch.uint8)
        bank.down[e].qweight = torch.empty(0, dtype=torch.uint8)
    torch.testing.assert_close(bank.forward_sorted(x[:1], torch.tensor([0, 0, 1, 0])), ref.forward_expert(2, x[:1]))
    with pytest.raises(ValueError, match=r"gate_up_proj: shape \[4, 128, 128\], expected \[4, 128, 256\]"):
        bank.load_gate_up(torch.zeros(E, D, Fh))


# ------------------------------------------------------------------------------------------------ a whole model
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # widths that are multiples of the group size (128); the real init scale, so the random model is not chaotic
    return write_hf_checkpoint(tmp_path_factory.mktemp("q") / "scout", hidden_size=128, intermediate_size=128,
                               initializer_range=0.02, vocab_size=300)


def test_int4_model_stays_close_to_float(ckpt):
    ref = minillama4.from_pretrained(ckpt)  # float32, as written
    bf16 = minillama4.from_pretrained(ckpt, dtype=torch.bfloat16)
    q4 = minillama4.from_pretrained(ckpt, quantize="int4")
    x = torch.randint(3, 300, (4, 64), generator=g())
    with torch.no_grad():
        want, got, got_bf16 = ref(x), q4(x), bf16(x).float()
    err, err_bf16 = rel_err(want, got), rel_err(want, got_bf16)
    same, same_bf16 = (want.argmax(-1) == got.argmax(-1)).float().mean().item(), (want.argmax(-1) == got_bf16.argmax(-1)).float().mean().item()
    print(f"int4: max logit error {err:.3f} of max |logit|, same greedy token {same:.1%}; "
          f"bf16: {err_bf16:.3f}, {same_bf16:.1%}")
    assert 0 < err < 0.15 and same > 0.8  # bounded; measured 0.079 and 90% (bf16: 0.043 and 97%)
    assert err < 4 * err_bf16
    # int4 experts under a bf16 rest, the Scout recipe: still close
    q4b = minillama4.from_pretrained(ckpt, dtype=torch.bfloat16, quantize="int4")
    assert q4b.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert rel_err(want, q4b(x).float()) < 0.15


def test_quantize_model_equals_the_int4_loader_and_covers_routed_and_shared_experts(ckpt):
    loaded = minillama4.from_pretrained(ckpt, quantize="int4")
    model = minillama4.from_pretrained(ckpt)
    report = quantize_model(model)
    assert sorted(e.name for e in report) == sorted(e.name.removeprefix("model.") for e in loaded.quant_report)
    L, E = model.config.num_hidden_layers, model.config.num_local_experts
    assert len(report) == L * (2 * E + 3)  # gate_up and down per routed expert, three shared matrices
    assert all(0.05 < e.rel_rms < 0.15 for e in report)  # Gaussian weights at 4 bits, group 128: ≈ 0.10
    assert summarize(report).startswith(f"{len(report)} tensors: ") and "(7.53× smaller)" in summarize(report)  # float32 → 4.25 bits
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        torch.testing.assert_close(sd_a[k], sd_b[k], atol=0, rtol=0)
    for layer in model.layers:  # attention, norms and router are untouched floats
        assert layer.self_attn.q_proj.weight.dtype == torch.float32 and layer.feed_forward.router.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model)


def test_int4_weight_bytes_are_as_computed(ckpt):
    cfg = minillama4.load_config(ckpt)
    for dtype, nbytes in ((None, 4), (torch.bfloat16, 2)):
        m = minillama4.from_pretrained(ckpt, dtype=dtype, quantize="int4")
        D, F_, V, L, E = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers, cfg.num_local_experts
        experts = L * (E + 1) * 3 * D * F_  # routed + shared weights
        by_hand = experts // 2 + experts // 128 * 4 + (cfg.num_parameters() - experts) * nbytes
        assert weight_bytes(m) == expected_int4_bytes(cfg, nbytes) == by_hand
    # Scout: ~103 B expert weights at 4.25 bits + the rest in bf16 ≈ 65 GB (fits an 80 GB H100); the text model in
    # bf16 is 215.5 GB (217.3 GB with the vision tower: chapter 11, README)
    scout = minillama4.Llama4Config.preset("scout")
    total = expected_int4_bytes(scout)
    routed = 48 * 16 * 3 * 5120 * 8192
    assert routed == 96_636_764_160
    assert 64e9 < total < 66e9 and round(scout.num_parameters() * 2 / 1e8) == 2155


def test_a_batch1_decode_step_reads_only_the_chosen_experts_weights(ckpt):
    """Which int4 weights a decode step reads: per MoE layer the shared expert's three matrices (they run as
    modules) and the routed expert the router chose, picked by index from the stacked buffers. With every other
    expert poisoned (NaN scales) the logits are unchanged, bit for bit; poisoning the chosen one reaches them."""
    m = minillama4.from_pretrained(ckpt, quantize="int4")
    ran = []
    for name, mod in m.named_modules():
        if isinstance(mod, Int4Linear) and ".shared_expert." in name:
            mod.register_forward_hook(lambda mod, inp, out, name=name: ran.append(name))

    def step(poison):
        cache = m.new_cache(1, 8)
        with torch.no_grad():
            m(torch.tensor([[5, 6, 7]]), cache=cache)
            saved = {}
            for i, layer in enumerate(m.layers):
                for kind in ("gate_up", "down"):
                    s_E = layer.feed_forward.experts.stacked(kind)["scales"]
                    saved[i, kind] = s_E.clone()
                    s_E[poison(i)] = float("nan")
            ran.clear()
            try:
                return m(torch.tensor([[8]]), cache=cache, return_routing=True)
            finally:
                for (i, kind), s_E in saved.items():
                    m.layers[i].feed_forward.experts.stacked(kind)["scales"].copy_(s_E)

    want, routing = step(lambda i: [])
    chosen = [int(r.indices[0, 0]) for r in routing]
    E = m.config.num_local_experts
    got, _ = step(lambda i: [e for e in range(E) if e != chosen[i]])
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert sorted(ran) == sorted(f"layers.{i}.feed_forward.shared_expert.{p}" for i in range(len(m.layers))
                                 for p in ("gate_proj", "up_proj", "down_proj"))
    bad, _ = step(lambda i: [chosen[i]] if i == 0 else [])
    assert bad.isnan().all()


# ------------------------------------------------------------------------------------------------ the post-trained toy
@pytest.mark.timeout(1800)
def test_int4_costs_the_post_trained_toy_no_held_out_answers_under_the_ci_profile():
    """Chapter 11's claim, from the cached sweep (float32 vs int4 at g = 32, 64, 128, symmetric and asymmetric): on the
    course's chat model the answers to the 300 held-out questions and the validation perplexity barely move; the
    next-token KL to float32 does, and orders the variants. Every int4 variant was really quantized: the recipe's bytes, predictions moved."""
    from minillama4.course import zoo
    from minillama4.course.int4_experiments import GROUP_SIZES, int4_quality, variant_name, variants

    sweep = int4_quality(profile="ci", progress=False)
    runs = dict(sweep["variants"])
    f32 = runs.pop("float32")
    assert sweep["questions"] == 300 and set(runs) == set(variants()) - {"float32"}
    cfg = zoo.recipes("ci")["mini-scout"].config
    assert f32["weight_bytes"] == 4 * cfg.num_parameters() and f32["kl"] == 0
    kl = {}
    for g_ in GROUP_SIZES:
        for sym in (True, False):
            r = runs[variant_name(g_, sym)]
            assert r["weight_bytes"] == expected_int4_bytes(cfg, 4, g_, 4 if sym else 8)  # a zero per group: 8 bytes
            assert r["kl"] > 1e-4 and r["logit_rel_rms"] > 0.01 and r["top1_agreement"] < 1  # predictions moved
            # chapter 11's bounds. Measured under ci: perplexity within 0.26% over seeds 0-2 (AMD) and 0.19% (seed 0,
            # Intel); accuracy moved by up to 19 of 300 questions (seed 2, AMD) and 6 (seed 0, Intel: g = 64
            # symmetric answered 6 more right; the format rate moved by 5 at g = 128 asymmetric): tests/test_model_claims.py
            assert abs(r["accuracy"] - f32["accuracy"]) <= 0.1 and r["format_rate"] >= f32["format_rate"] - 0.1
            assert abs(r["val_perplexity"] / f32["val_perplexity"] - 1) < 0.005
            kl[g_, sym] = r["kl"]
    # measured (seed 0, 1 thread): asymmetric 0.63–0.78× symmetric's KL at each g; g = 32 below g = 128 by 26%
    # (asymmetric). Symmetric g = 32 is below g = 128 at 1 thread but above it at 2 threads: not asserted
    assert all(kl[g_, False] < kl[g_, True] for g_ in GROUP_SIZES)
    assert kl[32, False] < kl[128, False]
    # at equal bits, on this ci chat model: 5 (asymmetric g = 64 vs symmetric g = 32; 0.65-0.84× over 9 ci runs). Not
    # at 4.5 (g = 128 vs g = 64): 0.82-1.04×, reversed once (Intel, seed 2, 4 threads). Chapter 11 asserts neither:
    # the laptop recipe's chat models gave 0.86-1.04× at 5 bits, reversed once (Intel, seed 1, 2 threads)
    assert kl[64, False] < kl[32, True]
