"""The same model on a CUDA device (run on a GPU machine; without one these tests are skipped, and say so)."""

import pytest
import torch

import minillama4
from minillama4.moe import MoE, moe_dense_reference
from conftest import load_hf, rel_err, write_hf_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _exact_matmuls():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_forward_backward_on_cuda_matches_dense(top_k):
    torch.manual_seed(0)
    m = MoE(64, 96, 8, top_k).cuda()
    torch.nn.init.normal_(m.router.weight, std=1.0)
    x = torch.randn(300, 64, device="cuda", requires_grad=True)
    out, _ = m(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    ref = moe_dense_reference(m, x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    ref.square().sum().backward()
    for g, p in zip(grads, m.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-4, rtol=1e-3)


def test_model_on_cuda_matches_transformers(tmp_path):
    path = write_hf_checkpoint(tmp_path / "c", "scout", top_k=2)
    ours = minillama4.from_pretrained(path, device="cuda")
    assert ours.device.type == "cuda" and ours.inv_freq.device.type == "cuda"
    ref = load_hf(path)
    x = torch.randint(3, 160, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(ref(x).logits, ours(x.cuda()).cpu()) <= 1e-5
    got = ours.generate(x[:1, :6].cuda(), max_new_tokens=26).cpu()
    want = ref.generate(x[:1, :6], max_new_tokens=26, do_sample=False, min_new_tokens=26, eos_token_id=None, pad_token_id=0)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", ["scout", "maverick"])
def test_bf16_on_cuda_tracks_transformers_bf16(tmp_path, kind):
    import transformers
    path = write_hf_checkpoint(tmp_path / "c", kind, dtype=torch.bfloat16)
    ours = minillama4.from_pretrained(path, device="cuda")
    ref = transformers.Llama4ForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16, attn_implementation="sdpa")
    ref = ref.cuda().eval()
    x = torch.randint(3, 160, (2, 37), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        want, got = ref(x).logits, ours(x)
    agree = (want.argmax(-1) == got.argmax(-1)).float().mean().item()
    print(f"{kind}: bf16 CUDA rel err {rel_err(want, got):.2e}, argmax agreement {agree:.3f}, equal {torch.equal(want, got)}")
    assert rel_err(want, got) <= 0.02 and agree >= 0.95


@pytest.mark.parametrize("quantize", [None, "int4"])
def test_bf16_decode_steps_never_wait_for_the_gpu(tmp_path, quantize):
    """A decode step queues its kernels without reading anything back (no .item(), .tolist(), bincount, …): the
    precondition for capturing it in a CUDA graph. Its experts are picked by index on the device (bfloat16 and int4
    alike). The prefill may check the prompt's token ids (one sync)."""
    widths = dict(hidden_size=128, intermediate_size=128) if quantize else {}  # int4: multiples of the group size
    m = minillama4.from_pretrained(write_hf_checkpoint(tmp_path / "c", "scout", **widths), dtype=torch.bfloat16,
                                   device="cuda", quantize=quantize)
    ids = torch.randint(0, m.config.vocab_size, (1, 20), device="cuda")
    cache = m.new_cache(1, 64)
    with torch.no_grad():
        nxt = m(ids, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(6):
                nxt = m(nxt, cache=cache, last_only=True, check_ids=False)[:, -1].argmax(-1, keepdim=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert cache.pos == 26


@pytest.mark.parametrize("dtype,quantize", [(torch.bfloat16, None), (torch.bfloat16, "int4"), (torch.float32, "int4")])
def test_compiled_decode_replays_a_cuda_graph_with_the_eager_logits(tmp_path, dtype, quantize):
    """DecodeStep on CUDA: compiled whole (torch's default compiler), recorded once as a CUDA graph, then replayed:
    the replays queue work without waiting for the GPU, and their logits are the eager steps' (int4: torch's
    int4 kernel layout)."""
    from minillama4.decode import DecodeStep

    path = write_hf_checkpoint(tmp_path / "c", "scout", hidden_size=128, intermediate_size=128, vocab_size=300,
                               initializer_range=0.02)
    m = minillama4.from_pretrained(path, dtype=dtype, device="cuda", quantize=quantize)
    x = torch.randint(3, 300, (2, 24), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    eager, static = m.new_cache(2, 32), m.new_cache(2, 32)
    with torch.no_grad():
        m(x[:, :8], cache=eager)
        m(x[:, :8], cache=static)
        step = DecodeStep(m, static)
        assert step.cuda_graph
        errs, agree = [], []
        for t in range(8, 24):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error" if t > 8 else 0)  # the first call compiles and records
            try:
                got = step(x[:, t:t + 1]).clone()
            finally:
                torch.cuda.set_sync_debug_mode(0)
            want = m(x[:, t:t + 1], cache=eager, last_only=True)[:, -1]
            if dtype == torch.float32:
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            errs.append(((got.float() - want.float()).norm() / want.float().norm()).item())
            agree.append((got.argmax(-1) == want.argmax(-1)).float().mean().item())
        assert step.graph is not None and static.pos == eager.pos == 24
        # bfloat16: the compiled kernels keep float32 intermediates that eager rounds to bfloat16, so the logits
        # differ at bfloat16's precision, and a near-tied expert choice can flip on a step (seen on CPU)
        assert sorted(errs)[len(errs) // 2] <= 2e-2 and sum(agree) / len(agree) >= 0.9, (errs, agree)
    assert m.generate(x[:, :6], max_new_tokens=20, compile=True).shape == (2, 26)  # the same path, through generate
