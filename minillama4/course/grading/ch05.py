"""Chapter 05 cases: decoder layer, top-p, sampling, greedy generation, what the chunk-aware KV cache keeps and
how big it is. Expected values come from the package: `DecoderLayer`, `sampling`, `Llama4.generate`, `KVCache`."""

from functools import partial

import torch

from ...cache import KVCache
from ...config import Llama4Config
from ...model import Llama4
from ...rope import rope_angles
from ...sampling import sample_next_token, top_p_filter
from .core import seeded as _g, Case, Exercise, register



def _toy_model(seed: int, **over) -> Llama4:
    """A random toy model with small chunks (so that short inputs cross chunk boundaries) and weights larger than
    the init, so that a wrong formula cannot hide under the tolerance."""
    cfg = Llama4Config.preset("toy").replace(**{"attention_chunk_size": 8, "floor_scale": 4, **over})
    torch.manual_seed(seed)
    model = Llama4(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.1, generator=_g(seed + len(name)))
            else:  # RMSNorm weights: not all ones, so a forgotten weight shows
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=_g(seed + 7 + len(name))))
    return model


def _attention_block(layer, freqs, positions_T, h):
    """The layer's attention sub-block, as the decoder_layer exercise receives it (module-level so it pickles)."""
    with torch.no_grad():
        return layer.self_attn(h, freqs, positions_T)


def _ffn_block(layer, h):
    with torch.no_grad():
        return layer.feed_forward(h)[0] if layer.is_moe else layer.feed_forward(h)


def _decoder_cases():
    # toy with interleave step 2: layer 0 dense + RoPE, layer 1 MoE + RoPE, layer 3 MoE + NoPE (global, temperature)
    model = _toy_model(0, interleave_moe_layer_step=2)
    cfg = model.config
    cases = []
    for seed, (i, B, T) in enumerate([(0, 2, 13), (1, 1, 19), (3, 2, 11)]):
        layer = model.layers[i]
        pos_T = torch.arange(T)
        freqs = rope_angles(pos_T, model.inv_freq)
        x = torch.randn(B, T, cfg.hidden_size, generator=_g(20 + seed))
        attn = partial(_attention_block, layer, freqs, pos_T)
        ffn = partial(_ffn_block, layer)
        with torch.no_grad():
            want = layer(x, freqs, pos_T)[0]
        cases.append(Case((x, attn, ffn, layer.input_layernorm.weight.detach().clone(),
                           layer.post_attention_layernorm.weight.detach().clone(), cfg.rms_norm_eps), want))
    return cases


def _probs_with_margin(seed: int, B: int, V: int, scale: float, top_p: float, margin: float = 1e-3):
    """Seeded probabilities [B, V] none of whose sorted cumulative sums lies within `margin` of top_p, so that
    every correct way of computing the cut keeps the same tokens (the first seed from `seed` on that qualifies)."""
    for s in range(seed, seed + 1000):
        probs = torch.softmax(torch.randn(B, V, generator=_g(s)) * scale, -1)
        cum = probs.sort(-1, descending=True).values.cumsum(-1)
        if (cum - top_p).abs().min() > margin:
            return probs
    raise RuntimeError("no seed gave a clear top-p cut")  # pragma: no cover


def _top_p_cases():
    cases = []
    for seed, (B, V, scale, top_p) in enumerate([(4, 10, 1.5, 0.5), (3, 16, 2.0, 0.9), (5, 8, 3.0, 0.05),
                                                 (2, 12, 0.5, 0.99), (6, 20, 2.5, 0.75)]):
        probs = _probs_with_margin(100 * seed, B, V, scale, top_p)
        cases.append(Case((probs, top_p), top_p_filter(probs, top_p)))
    return cases


def _sample_cases():
    cases = []
    for seed, (temperature, top_p) in enumerate([(0.0, 1.0), (1.0, 1.0), (0.7, 0.9), (1.5, 0.5), (1.0, 0.3)]):
        B, V = 64, 20  # many rows: a wrong temperature or a missing filter changes some of the draws
        logits = torch.randn(B, V, generator=_g(500 + seed)) * 2
        if temperature:  # make sure the top-p cut is clear-cut in every row (see _probs_with_margin)
            for s in range(500 + seed, 1500 + seed, 10):
                logits = torch.randn(B, V, generator=_g(s)) * 2
                cum = torch.softmax(logits / temperature, -1).sort(-1, descending=True).values.cumsum(-1)
                if top_p == 1.0 or (cum - top_p).abs().min() > 1e-4:
                    break
        want = sample_next_token(logits, temperature, top_p, _g(900 + seed))
        cases.append(Case((logits, temperature, top_p, _g(900 + seed)), want))
    return cases


def _greedy_cases():
    model = _toy_model(1)
    cases = []
    for seed, (B, T, n) in enumerate([(2, 5, 10), (1, 9, 4), (3, 1, 6)]):
        ids = torch.randint(3, model.config.vocab_size, (B, T), generator=_g(40 + seed))
        cases.append(Case((model, ids, n), model.generate(ids, max_new_tokens=n, use_cache=False)))
    return cases


def _kept_cases():
    """Run toy models through a real KVCache (token by token, and one prefill spanning several chunks) and read
    which positions each layer keeps: slots [0, length) hold positions [start, start + length)."""
    cases, seen = [], set()
    for seed, (chunk, prefill, total, wanted) in enumerate([(8, 1, 22, {0, 6, 7, 8, 15, 16, 21}),
                                                           (5, 13, 14, {12, 13})]):
        model = _toy_model(2 + seed, attention_chunk_size=chunk)
        ids = torch.randint(3, model.config.vocab_size, (1, total), generator=_g(60 + seed))
        cache = model.new_cache(1, total)
        with torch.no_grad():
            t = 0
            while t < total:
                n = prefill if t == 0 else 1
                model(ids[:, t:t + n], cache=cache)
                t += n
                pos = t - 1
                if pos not in wanted:
                    continue
                for i, layer in enumerate(cache.layers):
                    rope = model.config.uses_rope(i)
                    if (pos, chunk, rope) not in seen:
                        seen.add((pos, chunk, rope))
                        cases.append(Case((pos, chunk, rope), torch.arange(layer.start, layer.start + layer.length)))
    return cases


def _bytes_cases():
    toy, scout, maverick = (Llama4Config.preset(n) for n in ("toy", "scout", "maverick"))
    cases = []
    for cfg, B, n, bpv in [(toy, 1, 40, 4), (toy, 3, 1000, 4), (toy.replace(attention_chunk_size=None), 2, 300, 2),
                           (scout, 1, 1 << 20, 2), (maverick, 2, 3 * 8192 + 5, 2)]:
        dtype = {2: torch.bfloat16, 4: torch.float32}[bpv]
        want = KVCache(cfg, B, n, dtype=dtype, device="meta").nbytes()  # meta: shapes only, no memory
        cases.append(Case((cfg, B, n, bpv), want))
    return cases


register(Exercise("decoder_layer", 5, "decoder_layer", _decoder_cases,
                  "pre-norm: h = x + attn(rms(x)·w_in), then out = h + ffn(rms(h)·w_post) — the FFN reads h, "
                  "and each sub-block's output is added to its input, not normalised afterwards"))
register(Exercise("top_p_filter", 5, "top_p_filter", _top_p_cases,
                  "sort descending, keep a token iff cumsum − its own probability < top_p (so the token that "
                  "crosses top_p stays), scatter back to the original order, divide by the row sum"))
register(Exercise("sample_next_token", 5, "sample_next_token", _sample_cases,
                  "temperature 0: argmax; else softmax(logits.float() / temperature), top-p filter only when "
                  "top_p < 1, then one torch.multinomial(probs, 1, generator=generator) and squeeze(-1)", exact=True))
register(Exercise("greedy_generate", 5, "greedy_generate", _greedy_cases,
                  "each step: logits = model(ids) → take [:, -1] (the last position) → argmax(-1) → append with "
                  "torch.cat along dim 1; run it n times", exact=True))
register(Exercise("kept_positions", 5, "kept_positions", _kept_cases,
                  "NoPE: arange(0, pos + 1); RoPE: arange(pos // C * C, pos + 1) — a fixed chunk, not a sliding "
                  "window of the last C positions", exact=True))
register(Exercise("kv_cache_bytes", 5, "kv_cache_bytes", _bytes_cases,
                  "sum over layers of 2 (K and V) · batch · num_key_value_heads · slots · head_dim · bytes_per_value, "
                  "slots = min(attention_chunk_size, max_len) if config.is_chunked(i) else max_len"))
