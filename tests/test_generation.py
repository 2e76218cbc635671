"""KV cache (chunk-aware), sampling and generate."""

import pytest
import torch

import minillama4
from minillama4.sampling import sample_next_token

CFG = minillama4.Llama4Config.preset("toy").replace(attention_chunk_size=8, floor_scale=4, num_experts_per_tok=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = minillama4.Llama4(CFG).eval()
    for p in m.parameters():  # larger weights than the init, so that every mistake shows in the logits
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.1)
    return m


def ids(B, T, seed=0):
    return torch.randint(3, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pieces", [[37], [1] * 37, [5, 3, 8, 1, 1, 19], [13, 24], [8, 8, 8, 13]])
def test_cached_forward_equals_full_forward_for_any_split(model, pieces):
    x = ids(2, 37)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, 40)
        outs, t = [], 0
        for n in pieces:
            outs.append(model(x[:, t:t + n], cache=cache))
            t += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 37


def test_rope_layers_keep_only_the_current_chunk(model):
    cache = model.new_cache(1, 40)
    with torch.no_grad():
        model(ids(1, 21), cache=cache)
    for i, layer in enumerate(cache.layers):
        if CFG.uses_rope(i):
            assert layer.k.shape[2] == 8 and layer.start == 16 and layer.length == 5  # positions 16..20
        else:
            assert layer.k.shape[2] == 40 and layer.start == 0 and layer.length == 21
    # memory: per extra token only the NoPE layers grow
    per_layer_token = 2 * CFG.num_key_value_heads * CFG.head_dim * 4  # K and V, float32
    n_nope = sum(not CFG.uses_rope(i) for i in range(CFG.num_hidden_layers))
    assert cache.bytes_per_token() == n_nope * per_layer_token
    big = model.new_cache(1, 400)
    assert big.nbytes() - cache.nbytes() == (400 - 40) * cache.bytes_per_token()


def test_cache_full_is_a_clear_error(model):
    cache = model.new_cache(1, 10)
    with torch.no_grad():
        model(ids(1, 8), cache=cache)
        with pytest.raises(ValueError, match="KV cache full: it holds 10 tokens, 8 are used and 3 more"):
            model(ids(1, 3), cache=cache)
    with pytest.raises(ValueError, match="KV cache full"):
        model.generate(ids(1, 5), max_new_tokens=10, cache_len=12)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model.new_cache(1, CFG.max_position_embeddings + 1)


def test_greedy_generate_with_cache_equals_full_recompute(model):
    x = ids(2, 6)
    fast = model.generate(x, max_new_tokens=30)  # crosses several chunk boundaries of 8
    slow = model.generate(x, max_new_tokens=30, use_cache=False)
    assert fast.shape == (2, 36) and torch.equal(fast, slow)
    # and each token is the argmax of a full forward pass over what came before
    with torch.no_grad():
        assert torch.equal(model(fast[:, :-1])[:, 5:].argmax(-1), fast[:, 6:])


def test_generate_stops_at_eos_and_pads_finished_rows(model):
    x = ids(3, 4)
    free = model.generate(x, max_new_tokens=12)[:, 4:]  # no eos: every row runs the full 12 tokens
    # an eos that row 0 emits at its third new token and row 2 never emits; row 1 emits it (if at all) later
    for k in range(2, 12):
        eos = int(free[0, k])
        if eos not in free[0, :k].tolist() and eos not in free[2].tolist():
            break
    else:
        pytest.fail("no token of row 0 is missing from row 2: change the prompt seed")
    out = model.generate(x, max_new_tokens=12, eos_token_id=[eos])[:, 4:]
    assert torch.equal(out, model.generate(x, max_new_tokens=12, eos_token_id=eos)[:, 4:])  # an int works too
    assert out.shape == (3, 12)  # row 2 never stops, so nobody stops early
    for row in range(3):
        hits = (free[row] == eos).nonzero().flatten().tolist()
        stop = hits[0] + 1 if hits else 12  # up to and including its first eos
        assert out[row, :stop].tolist() == free[row, :stop].tolist(), row
        assert (out[row, stop:] == eos).all(), row  # then padding
    assert (free[0] == eos).nonzero()[0].item() == k and not (free[2] == eos).any()
    # when every row has emitted one of the eos tokens, generation ends there
    stops = [int(free[r, 2 + r]) for r in range(3)]
    out = model.generate(x, max_new_tokens=12, eos_token_id=stops)[:, 4:]
    first = [next(i for i, t in enumerate(free[r].tolist()) if t in stops) for r in range(3)]
    assert out.shape == (3, max(first) + 1)
    for row in range(3):
        assert out[row, :first[row] + 1].tolist() == free[row, :first[row] + 1].tolist()
        assert (out[row, first[row] + 1:] == stops[0]).all()


def test_sampling_is_seeded_and_top_p_restricts_the_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert sample_next_token(logits, 0.0).item() == 0
    draws = torch.stack([sample_next_token(logits, 1.0, 0.7, torch.Generator().manual_seed(s)) for s in range(300)])
    assert set(draws.flatten().tolist()) == {0, 1}  # 0.5 + 0.3 >= 0.7: tokens 2 and 3 are cut
    a = [sample_next_token(logits, 1.0, 1.0, torch.Generator().manual_seed(s)).item() for s in range(300)]
    assert set(a) == {0, 1, 2, 3}
    b = [sample_next_token(logits, 1.0, 1.0, torch.Generator().manual_seed(s)).item() for s in range(300)]
    assert a == b
    with pytest.raises(ValueError):
        sample_next_token(logits, -1.0)
    with pytest.raises(ValueError):
        sample_next_token(logits, 1.0, top_p=0.0)


def test_sampled_generate_is_reproducible(model):
    x = ids(2, 5)
    gen = lambda seed, **kw: model.generate(x, 16, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    a = gen(3, temperature=0.8, top_p=0.9)
    assert torch.equal(a, gen(3, temperature=0.8, top_p=0.9))  # same seed, same settings: same tokens
    assert not torch.equal(a, gen(4, temperature=0.8, top_p=0.9))  # another seed
    assert not torch.equal(a, gen(3, temperature=2.0, top_p=0.9))  # another temperature, same seed
    assert not torch.equal(gen(3, temperature=1.0), gen(3, temperature=1.0, top_p=0.5))  # another top_p
    # greedy: each token the argmax of a full forward pass over what came before
    greedy = x
    with torch.no_grad():
        for _ in range(16):
            greedy = torch.cat([greedy, model(greedy)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(gen(3, temperature=0.0), greedy) and torch.equal(gen(4, temperature=0.0, top_p=0.5), greedy)
    assert torch.equal(gen(3, temperature=1.0, top_p=1e-6), greedy)  # a nucleus of one token: the argmax
    assert not torch.equal(gen(3, temperature=1.0), greedy)


def test_bad_token_ids_and_shapes(model):
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.tensor([[1, CFG.vocab_size]]))
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        model(torch.tensor([1, 2, 3]))


def test_training_step_updates_every_kind_of_weight():
    torch.manual_seed(0)
    m = minillama4.Llama4(CFG)
    x = ids(2, 20)
    logits, routing = m(x, return_routing=True)
    assert len(routing) == len(CFG.moe_layers) and routing[0].logits.shape == (40, CFG.num_local_experts)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, CFG.vocab_size), x[:, 1:].reshape(-1))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_return_attention_gives_each_layers_weights_and_the_same_logits():
    torch.manual_seed(0)
    cfg = minillama4.Llama4Config.preset("toy").replace(attention_chunk_size=8)
    model = minillama4.Llama4(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        plain = model(ids)
        logits, routing, attn = model(ids, return_routing=True, return_attention=True)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    assert len(routing) == len(cfg.moe_layers) and len(attn) == cfg.num_hidden_layers
    for i, w in enumerate(attn):
        assert w.shape == (2, cfg.num_attention_heads, 20, 20)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, cfg.num_attention_heads, 20))
        q, k = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
        allowed = (k <= q) & ((k // 8 == q // 8) if cfg.uses_rope(i) else True)
        assert (w[:, :, ~allowed] == 0).all()  # chunked on RoPE layers, global causal on NoPE layers
