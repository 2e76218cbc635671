"""Each component against a direct formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from minillama4.attention import Attention, attention_mask, temperature_scale
from minillama4.config import Llama4Config
from minillama4.ffn import ExpertBank, SwiGLU
from minillama4.moe import MoE, dispatch, moe_dense_reference
from minillama4.norm import RMSNorm, rms_norm
from minillama4.rope import apply_rope, inverse_frequencies, rope_angles
from minillama4.router import Router


def g(seed):
    return torch.Generator().manual_seed(seed)


def test_rmsnorm_formula_and_bf16_placement():
    x = torch.randn(3, 5, 16, generator=g(0))
    n = RMSNorm(16, eps=1e-5)
    torch.nn.init.normal_(n.weight, generator=g(1))
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * n.weight
    torch.testing.assert_close(n(x), want)
    xb, nb = x.bfloat16(), n.bfloat16()
    # normalise in float32, round to bf16, then multiply by the bf16 weight
    assert torch.equal(nb(xb), rms_norm(xb.float(), 1e-5).bfloat16() * nb.weight)


def test_swiglu_and_expert_bank_formulas():
    ffn = SwiGLU(8, 12)
    x = torch.randn(5, 8, generator=g(0))
    torch.testing.assert_close(ffn(x), (F.silu(x @ ffn.gate_proj.weight.T) * (x @ ffn.up_proj.weight.T)) @ ffn.down_proj.weight.T)
    bank = ExpertBank(3, 8, 12)
    for e in range(3):
        gate, up = x @ bank.gate_up_proj[e, :, :12], x @ bank.gate_up_proj[e, :, 12:]  # gate first, then up
        torch.testing.assert_close(bank.forward_expert(e, x), (F.silu(gate) * up) @ bank.down_proj[e])
    x3 = torch.randn(3, 5, 8, generator=g(1))
    torch.testing.assert_close(bank(x3), torch.stack([bank.forward_expert(e, x3[e]) for e in range(3)]))


def test_router_topk_on_raw_logits_then_sigmoid():
    r = Router(8, 6, top_k=2)
    x = torch.randn(10, 8, generator=g(0))
    out = r(x)
    logits = x @ r.weight.T
    torch.testing.assert_close(out.logits, logits)
    assert torch.equal(out.indices, logits.topk(2, -1).indices)
    torch.testing.assert_close(out.scores, torch.sigmoid(logits.gather(1, out.indices)))


def _moe(E, k, seed=0, D=16, Fh=24):
    torch.manual_seed(seed)
    m = MoE(D, Fh, E, k)
    torch.nn.init.normal_(m.router.weight, std=1.0)  # spread the routing
    for w in (m.experts.gate_up_proj, m.experts.down_proj):
        torch.nn.init.normal_(w, std=0.5)  # large enough that SwiGLU is far from linear
    return m


@pytest.mark.parametrize("E, k", [(1, 1), (4, 1), (4, 2), (8, 3), (16, 16)])
def test_sparse_moe_equals_dense_all_experts(E, k):
    m = _moe(E, k)
    x = torch.randn(2, 33, 16, generator=g(1))
    out, routing = m(x)
    torch.testing.assert_close(out.reshape(-1, 16), moe_dense_reference(m, x.reshape(-1, 16)), atol=1e-5, rtol=1e-5)
    assert routing.indices.shape == (66, k)


@pytest.mark.parametrize("D, Fh", [(8, 6), (6, 8), (5, 7), (12, 20)])
def test_sparse_moe_works_for_any_width(D, Fh):
    # widths whose rows are not 16-byte aligned cannot use the grouped-matmul kernel: the loop must take over
    m = _moe(4, 2, D=D, Fh=Fh)
    x = torch.randn(30, D, generator=g(3), requires_grad=True)
    out, _ = m(x)
    torch.testing.assert_close(out, moe_dense_reference(m, x), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert x.grad.isfinite().all() and m.experts.gate_up_proj.grad.abs().sum() > 0


def test_score_multiplies_the_expert_input_not_its_output():
    m = _moe(4, 1)
    x = torch.randn(20, 16, generator=g(2))
    r = m.router(x)
    on_output = m.shared_expert(x) + torch.stack(
        [r.scores[t, 0] * m.experts.forward_expert(int(r.indices[t, 0]), x[t:t + 1])[0] for t in range(20)])
    on_input = m.shared_expert(x) + torch.stack(
        [m.experts.forward_expert(int(r.indices[t, 0]), r.scores[t, 0] * x[t:t + 1])[0] for t in range(20)])
    out, _ = m(x)
    torch.testing.assert_close(out, on_input)
    assert (out - on_output).abs().max() > 0.1 * out.abs().max()


def test_dispatch_runs_each_expert_only_on_its_tokens(monkeypatch):
    m = _moe(8, 2)
    x = torch.randn(40, 16, generator=g(3))
    r = m.router(x)
    token_N, slot_N, counts_E = dispatch(r.indices, 8)
    assert counts_E.sum() == 80 and torch.equal(counts_E, torch.bincount(r.indices.flatten(), minlength=8))
    assert torch.equal(r.indices.flatten()[slot_N], r.indices.flatten().sort(stable=True).values)  # grouped by expert
    seen = {}
    real = m.experts.forward_sorted
    monkeypatch.setattr(m.experts, "forward_sorted", lambda xs, counts: seen.update(rows=xs.shape[0], counts=counts) or real(xs, counts))
    m(x)
    assert seen["rows"] == 80 and torch.equal(seen["counts"], counts_E)  # T·k rows in all, no dense padding


@pytest.mark.parametrize("grouped", [True, False])
def test_grouped_kernel_and_readable_loop_agree_with_one_expert_at_a_time(monkeypatch, grouped):
    import minillama4.ffn as ffn
    monkeypatch.setattr(ffn, "_grouped_mm_ok", lambda *a: grouped)
    bank = _moe(6, 1).experts
    counts = torch.tensor([3, 0, 5, 1, 0, 7])
    x = torch.randn(16, 16, generator=g(6), requires_grad=True)
    y = bank.forward_sorted(x, counts)
    want = torch.cat([bank.forward_expert(e, xs) for e, xs in enumerate(x.split(counts.tolist())) if len(xs)])
    torch.testing.assert_close(y, want)
    (y * torch.randn(y.shape, generator=g(7))).sum().backward()  # (grouped_mm's backward rejects an expanded grad)
    assert bank.gate_up_proj.grad[1].abs().sum() == 0 and bank.gate_up_proj.grad[0].abs().sum() > 0  # unused expert


def test_gradients_reach_router_experts_and_shared_expert_and_match_dense():
    m = _moe(4, 2)
    x = torch.randn(30, 16, generator=g(4), requires_grad=True)
    out, _ = m(x)
    out.pow(2).sum().backward()
    sparse = {n: p.grad.clone() for n, p in m.named_parameters()}
    gx = x.grad.clone()
    for name in ("router.weight", "experts.gate_up_proj", "experts.down_proj", "shared_expert.gate_proj.weight"):
        assert sparse[name].abs().sum() > 0, name
    m.zero_grad()
    x.grad = None
    moe_dense_reference(m, x).pow(2).sum().backward()
    for n, p in m.named_parameters():  # equal up to float32 summation order
        assert (sparse[n] - p.grad).abs().max() <= 1e-5 * p.grad.abs().max(), n
    assert (gx - x.grad).abs().max() <= 1e-5 * x.grad.abs().max()


def test_chunked_mask_is_block_diagonal_causal():
    q = torch.arange(20)
    m = attention_mask(q, q, chunk_size=8)
    for p in range(20):
        for s in range(20):
            assert bool(m[p, s]) == (s <= p and s // 8 == p // 8)
    assert m[8].sum() == 1 and m[7].sum() == 8  # token 8 sees only itself; token 7 sees 0..7
    assert torch.equal(attention_mask(q, q, None), torch.ones(20, 20).tril().bool())


def test_temperature_factor_at_known_positions():
    s = temperature_scale(torch.tensor([0, 8190, 8191, 16382, 16383, 10_000_000]), 8192, 0.1)
    want = [1.0, 1.0, 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(3),
            1 + 0.1 * math.log(10_000_001 // 8192 + 1)]
    torch.testing.assert_close(s, torch.tensor(want))


def test_rope_rotates_adjacent_pairs():
    x = torch.randn(1, 5, 2, 8, generator=g(0))
    inv = inverse_frequencies(8, 10000.0)
    out = apply_rope(x, rope_angles(torch.arange(5), inv))
    for p in range(5):
        for i in range(4):
            c, s = math.cos(p * inv[i].item()), math.sin(p * inv[i].item())
            a, b = x[0, p, :, 2 * i], x[0, p, :, 2 * i + 1]  # pair (2i, 2i+1), not (i, i + Dh/2)
            torch.testing.assert_close(out[0, p, :, 2 * i], a * c - b * s)
            torch.testing.assert_close(out[0, p, :, 2 * i + 1], a * s + b * c)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 8192},
])
def test_llama3_scaling_matches_transformers(scaling):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cfg = transformers.Llama4TextConfig(rope_parameters={"rope_theta": 500000.0, **scaling})
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg)
    got = inverse_frequencies(128, 500000.0, scaling)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    base = inverse_frequencies(128, 500000.0)
    unchanged = int((got == base).sum())
    assert unchanged == (35 if scaling["high_freq_factor"] == 1.0 else 29)  # the fact sheet's counts


def test_qk_norm_only_on_rope_layers_and_temperature_only_on_nope_layers():
    cfg = Llama4Config.preset("toy")
    rope_layer, nope_layer = Attention(cfg, 0), Attention(cfg, 3)
    assert rope_layer.qk_norm_eps == cfg.rms_norm_eps and rope_layer.temperature is None and rope_layer.chunk_size == 64
    assert nope_layer.qk_norm_eps is None and nope_layer.temperature == (64, 0.1) and nope_layer.chunk_size is None
    mav = Attention(cfg.replace(use_qk_norm=False), 0)
    assert mav.qk_norm_eps is None


def test_eager_weights_path_equals_sdpa_path():
    cfg = Llama4Config.preset("toy").replace(attention_chunk_size=8, floor_scale=4)
    torch.manual_seed(0)
    for layer in (0, 3):
        a = Attention(cfg, layer)
        x = torch.randn(2, 21, cfg.hidden_size, generator=g(5))
        pos = torch.arange(21)
        freqs = rope_angles(pos, inverse_frequencies(cfg.head_dim, cfg.rope_theta))
        out, w = a(x, freqs, pos, return_weights=True)
        torch.testing.assert_close(out, a(x, freqs, pos), atol=1e-6, rtol=1e-5)
        assert torch.equal(w[0, 0] > 0, attention_mask(pos, pos, a.chunk_size))


def test_selection_bias_changes_the_choice_but_not_the_score():
    from minillama4.router import Router
    torch.manual_seed(0)
    r = Router(8, 4, 1)
    x = torch.randn(50, 8)
    base = r(x)
    r.selection_bias[:] = torch.tensor([0.0, 0.0, 0.0, 100.0])  # everyone picks expert 3
    biased = r(x)
    assert (biased.indices == 3).all()
    torch.testing.assert_close(biased.scores[:, 0], torch.sigmoid(base.logits[:, 3]))  # σ of the raw logit
    assert "selection_bias" not in r.state_dict()  # never written to checkpoints
