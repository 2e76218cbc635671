"""minillama4 vs transformers' Llama 4 on tiny random checkpoints that transformers wrote: same logits, same tokens."""

import pytest
import torch

import minillama4
from conftest import CHUNK, load_hf, rel_err, transformers, write_hf_checkpoint

TOL = 1e-5  # max |Δlogit| / max |logit| in float32


def _ids(T=37, B=2, V=160, seed=1):
    return torch.randint(3, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["causal", "conditional"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("kind", ["scout", "maverick"])
def test_logits_match_transformers(tmp_path, kind, top_k, layout):
    path = write_hf_checkpoint(tmp_path / "ckpt", kind, top_k, layout)
    ours = minillama4.from_pretrained(path)
    ref = load_hf(path, layout)
    x = _ids()  # 37 tokens: 5 chunks of 8 on the RoPE layers; temperature tuning active on the NoPE layers
    with torch.no_grad():
        want = ref(x).logits
        got = ours(x)
    assert got.shape == want.shape == (2, 37, 160)
    assert rel_err(want, got) <= TOL
    assert torch.equal(want.argmax(-1), got.argmax(-1))


@pytest.mark.parametrize("sharded", [False, True])
def test_bf16_checkpoints_single_and_sharded(tmp_path, sharded):
    path = write_hf_checkpoint(tmp_path / "bf16", "scout", 2, "conditional", dtype=torch.bfloat16,
                               max_shard_size="40KB" if sharded else None)
    files = sorted(p.name for p in path.iterdir())
    assert ("model.safetensors.index.json" in files) == sharded
    if sharded:
        assert sum(f.endswith(".safetensors") for f in files) > 2
    ours = minillama4.from_pretrained(path, dtype=torch.float32)
    assert ours.dtype == torch.float32
    ref = load_hf(path, "conditional")
    x = _ids()
    with torch.no_grad():
        assert rel_err(ref(x).logits, ours(x)) <= TOL
    assert minillama4.from_pretrained(path).dtype == torch.bfloat16  # dtype=None keeps the stored dtype


@pytest.mark.parametrize("kind, top_k", [("scout", 1), ("scout", 2), ("maverick", 1), ("maverick", 2)])
def test_bf16_compute_is_bit_identical_to_transformers_sdpa(tmp_path, kind, top_k):
    """In bfloat16 the rounding points matter (RMSNorm, RoPE, router sigmoid, temperature): ours are the
    reference's, so on the CPU the logits are the same bits as transformers' SDPA path."""
    path = write_hf_checkpoint(tmp_path / "b", kind, top_k, dtype=torch.bfloat16)
    ours = minillama4.from_pretrained(path)
    ref = transformers.Llama4ForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16, attn_implementation="sdpa")
    x = _ids()
    with torch.no_grad():
        want, got = ref.eval()(x).logits, ours(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_sdpa_reference_agrees_too(tmp_path):
    path = write_hf_checkpoint(tmp_path / "c", "scout")
    ours, ref = minillama4.from_pretrained(path), load_hf(path, attn="sdpa")
    x = _ids()
    with torch.no_grad():
        assert rel_err(ref(x).logits, ours(x)) <= TOL


def test_parity_holds_where_routing_and_temperature_matter(tmp_path):
    """Guard against a weak test: the tiny models must actually route tokens to several experts, and the
    temperature tuning and chunking must change the output (so a model without them would fail the parity test)."""
    path = write_hf_checkpoint(tmp_path / "c", "scout")
    ours = minillama4.from_pretrained(path)
    x = _ids()
    with torch.no_grad():
        logits, routing = ours(x, return_routing=True)
        assert all(len(r.indices.unique()) >= 3 for r in routing)
        for attr, value in [("temperature", None), ("chunk_size", None)]:
            saved = [getattr(l.self_attn, attr) for l in ours.layers]
            for l in ours.layers:
                setattr(l.self_attn, attr, value)
            assert rel_err(logits, ours(x)) > 100 * TOL, attr
            for l, s in zip(ours.layers, saved):
                setattr(l.self_attn, attr, s)


@pytest.mark.parametrize("kind", ["scout", "maverick"])
def test_greedy_generate_matches_transformers_across_chunks(tmp_path, kind):
    path = write_hf_checkpoint(tmp_path / "g", kind)
    ours, ref = minillama4.from_pretrained(path), load_hf(path)
    prompt = _ids(T=6, B=1)
    n = 3 * CHUNK + 2  # crosses three chunk boundaries while decoding
    got = ours.generate(prompt, max_new_tokens=n, temperature=0.0)
    want = ref.generate(prompt, max_new_tokens=n, do_sample=False, min_new_tokens=n, eos_token_id=None,
                        pad_token_id=0)
    assert torch.equal(got, want)


def test_roundtrip_save_pretrained_loads_in_transformers(tmp_path):
    cfg = minillama4.Llama4Config.preset("toy").replace(num_hidden_layers=4, interleave_moe_layer_step=2,
                                                        num_experts_per_tok=2, floor_scale=4, attention_chunk_size=8)
    torch.manual_seed(0)
    model = minillama4.Llama4(cfg).eval()
    minillama4.save_pretrained(model, tmp_path / "toy", max_shard_bytes=400_000)
    assert (tmp_path / "toy" / "model.safetensors.index.json").exists()
    ref = load_hf(tmp_path / "toy")
    x = torch.randint(0, cfg.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(ref(x).logits, model(x)) <= TOL
    again = minillama4.from_pretrained(tmp_path / "toy")
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
