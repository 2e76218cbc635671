"""The decode step that never waits for the host (`decode.py`): experts picked by index, the static view of the KV
cache, and the whole step under torch.compile(fullgraph=True), against the eager and prefill paths."""

import pytest
import torch

import minillama4
from minillama4.decode import DecodeStep
from minillama4.fp8 import Fp8TrainingExpertBank
from minillama4.moe import MoE, gathered_experts, routed_experts
from minillama4.quant import Int4ExpertBank, kernel_available, quantize_model

# two layers (one RoPE, one NoPE with temperature tuning), chunks of 8: a 30-token run crosses three chunks
CFG = minillama4.Llama4Config.preset("toy").replace(num_hidden_layers=2, attention_chunk_size=8, floor_scale=4,
                                                    attn_scale=0.5, no_rope_layers=[1, 0])


def make(top_k=1, quantize=None, dtype=torch.float32, layout="auto"):
    torch.manual_seed(0)
    m = minillama4.Llama4(CFG.replace(num_experts_per_tok=top_k)).eval()
    for p in m.parameters():  # larger weights than the init, so that a mistake shows in the logits
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.1)
    m = m.to(dtype)
    if quantize:
        quantize_model(m, quantize=quantize, layout=layout)
    return m


def ids(B, T, seed=0):
    return torch.randint(3, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


BANKS = ["float32", "bfloat16", "int4 plain", "int4 kernel", "fp8"]


def moe_of(kind: str, top_k: int) -> MoE:
    torch.manual_seed(1)
    moe = MoE(128, 128, 4, top_k)
    torch.nn.init.normal_(moe.router.weight, std=1.0)  # decisive routing: every expert gets some tokens
    for w in (moe.experts.gate_up_proj, moe.experts.down_proj):
        torch.nn.init.normal_(w, std=0.05)
    if kind == "bfloat16":
        return moe.to(torch.bfloat16)
    if kind.startswith("int4"):
        assert kind == "int4 plain" or kernel_available("cpu")  # torch's CPU int4 kernel: tested, never skipped
        bank = Int4ExpertBank(4, 128, 128, 128, kind.split()[1])
    elif kind == "fp8":
        from minillama4.fp8 import Fp8ExpertBank
        bank = Fp8ExpertBank(4, 128, 128)
    else:
        return moe
    bank.load_gate_up(moe.experts.gate_up_proj.detach())
    bank.load_down(moe.experts.down_proj.detach())
    moe.experts = bank
    return moe


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("kind", BANKS)
def test_gathered_experts_equal_the_sorted_path(kind, top_k):
    """A few tokens (experts picked by index) give what the sorted per-expert path gives for the same routing, for
    every kind of bank; and the MoE layer takes the gathered path only for a few rows."""
    moe = moe_of(kind, top_k)
    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
    x_TD = torch.randn(8 // top_k, 128, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():
        routing = moe.router(x_TD)
        assert routing.indices.unique().numel() > 1  # several experts in play
        got = gathered_experts(moe.experts, x_TD, routing)
        want = routed_experts(moe.experts, x_TD, routing)
        torch.testing.assert_close(got, want, **({} if dtype == torch.bfloat16 else dict(atol=1e-6, rtol=1e-5)))
        seen, inner = [], moe.experts.forward_gathered
        moe.experts.forward_gathered = lambda x, e: seen.append(len(x)) or inner(x, e)
        moe(x_TD)  # T·k = 8 rows: gathered
        moe(torch.cat([x_TD] * 3))  # 24 rows: sorted
    assert seen == [8]


def test_int4_gathered_step_reads_only_the_chosen_experts_and_restacks_after_to():
    """The gathered int4 path takes its weights from the loader's stacked buffers (no copy), touches only the chosen
    experts (the others poisoned with NaN leave the result unchanged; poisoning a chosen one reaches it), and after
    `.to()` stacks the experts' new buffers again."""
    moe = moe_of("int4 plain", 1)
    bank = moe.experts
    x_TD = torch.randn(3, 128, generator=torch.Generator().manual_seed(3))
    stacks = bank.stacked("gate_up")
    assert all(m.qweight.data_ptr() == stacks["qweight"][e].data_ptr() for e, m in enumerate(bank.gate_up))
    assert stacks["qweight"].data_ptr() == bank.gate_up[0].qweight._base.data_ptr()  # the loader's, not a copy
    with torch.no_grad():
        routing = moe.router(x_TD)
        want = gathered_experts(bank, x_TD, routing)
        chosen = set(routing.indices.flatten().tolist())
        assert chosen != set(range(4))
        for kind in ("gate_up", "down"):
            for e in set(range(4)) - chosen:
                bank.stacked(kind)["scales"][e] = float("nan")
        torch.testing.assert_close(gathered_experts(bank, x_TD, routing), want, atol=0, rtol=0)
        bank.stacked("down")["scales"][min(chosen)] = float("nan")
        assert gathered_experts(bank, x_TD, routing).isnan().any()
    bank.to(torch.float64)  # every expert's scales become new tensors: the stacks are rebuilt from them
    assert bank.stacked("down")["scales"].dtype == torch.float64
    assert all(m.scales.data_ptr() == bank.stacked("down")["scales"][e].data_ptr() for e, m in enumerate(bank.down))
    with pytest.raises(RuntimeError, match="no weights yet"):
        Int4ExpertBank(4, 128, 128, 128, "plain").forward_gathered(x_TD, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("top_k,quantize", [(1, None), (2, None), (1, "int4"), (2, "fp8")])
def test_static_steps_equal_eager_steps_and_the_prefill_across_chunks(top_k, quantize):
    """Token by token from position 5 to 30: the static step (every slot read under a mask, experts picked by index)
    gives the eager step's logits and the prefill's (the whole sequence at once: the sorted expert path, attention
    over exactly the visible keys); an eager step after it continues the same cache correctly."""
    m = make(top_k, quantize)
    x = ids(2, 31)
    eager, static = m.new_cache(2, 32), m.new_cache(2, 32)
    with torch.no_grad():
        prefill = m(x)
        m(x[:, :5], cache=eager)
        m(x[:, :5], cache=static)
        step = DecodeStep(m, static, compile=False)
        for t in range(5, 30):
            got = step(x[:, t:t + 1])
            torch.testing.assert_close(got, m(x[:, t:t + 1], cache=eager, last_only=True)[:, -1], atol=1e-5, rtol=1e-5)
            if quantize != "fp8":  # fp8 rounds activations: a 1e-6 difference can cross an e4m3 step (also eager)
                torch.testing.assert_close(got, prefill[:, t], atol=1e-4, rtol=1e-4)
        assert static.pos == eager.pos == 30
        assert [(L.start, L.length) for L in static.layers] == [(L.start, L.length) for L in eager.layers]
        torch.testing.assert_close(m(x[:, 30:], cache=static), m(x[:, 30:], cache=eager), atol=1e-5, rtol=1e-5)


def test_compiled_decode_of_an_int4_model_is_one_graph_with_the_eager_tokens():
    """generate(compile=...): the decode step compiles whole (fullgraph: a graph break is an error), once for all
    steps and for a second call (a recompile is an error here), and greedy decoding gives the eager tokens.
    The backend is "aot_eager": the graph torch.compile's default compiler would receive, run without generating
    code (that takes minutes on a busy 2-core machine)."""
    m = make(top_k=1, quantize="int4")
    x = ids(2, 5)
    want = m.generate(x, max_new_tokens=20)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = m.generate(x, max_new_tokens=20, compile="aot_eager")
        again = m.generate(ids(2, 5, seed=1), max_new_tokens=20, compile="aot_eager")
    assert torch.equal(got, want)
    assert torch.equal(again, m.generate(ids(2, 5, seed=1), max_new_tokens=20))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_decode_of_float_models_gives_the_eager_tokens(dtype):
    """The float32 and bfloat16 decode steps trace as one graph too (through AOTAutograd, run as eager kernels: no
    code generation, so it is quick), top-2, and give the eager tokens."""
    m = make(top_k=2, dtype=dtype)
    x = ids(2, 5)
    cache = m.new_cache(2, 26)
    with torch.no_grad():
        want = m.generate(x, max_new_tokens=20)
        nxt = m(x, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        step, got = DecodeStep(m, cache, backend="aot_eager"), [nxt]
        torch._dynamo.reset()
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(19):
                got.append(step(got[-1]).argmax(-1, keepdim=True))
    assert torch.equal(torch.cat([x, *got], 1), want)


def test_bad_calls_are_clear_errors():
    m = make()
    cache = m.new_cache(1, 6)
    with torch.no_grad():
        m(ids(1, 5), cache=cache)
    step = DecodeStep(m, cache, compile=False)
    with pytest.raises(ValueError, match=r"one token per row of the cache's batch, ids \[1, 1\]"):
        step(ids(1, 2))
    step(ids(1, 1))
    with pytest.raises(ValueError, match="KV cache full"):
        step(ids(1, 1))
    with pytest.raises(ValueError, match="needs use_cache=True"):
        m.generate(ids(1, 3), max_new_tokens=2, use_cache=False, compile=True)
    with pytest.raises(TypeError, match="compile must be True, False or a torch.compile backend name"):
        m.generate(ids(1, 3), max_new_tokens=2, compile=1)
    for name in ("yes", ""):
        with pytest.raises(ValueError, match=f"compile backend '{name}' is not a torch.compile backend"):
            m.generate(ids(1, 3), max_new_tokens=2, compile=name)
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA model"):
        DecodeStep(m, cache, cuda_graph=True)
    with pytest.raises(ValueError, match=r"batch 17 × top-1 has 17 \(token, expert\) pairs .* at most 16"):
        m.generate(ids(17, 3), max_new_tokens=2, compile=True)
    training = m.layers[0].feed_forward
    training.experts = Fp8TrainingExpertBank(training.experts.num_experts, training.experts.dim, training.experts.hidden)
    with pytest.raises(ValueError, match="layer 0's experts \\(Fp8TrainingExpertBank\\) cannot pick their weights"):
        m.generate(ids(1, 3), max_new_tokens=2, compile=True)
