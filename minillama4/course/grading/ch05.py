"""Chapter 05 cases: decoder layer, top-p, sampling, greedy generation, what the chunk-aware KV cache keeps and
how big it is. Expected values come from the package: `DecoderLayer`, `sampling`, `Llama4.generate`, `KVCache`."""

from functools import partial

import torch
import torch.nn.functional as F

from ...cache import KVCache
from ...config import Llama4Config
from ...model import Llama4
from ...rope import rope_angles
from ...sampling import sample_next_token, top_p_filter
from .core import Case, Exercise, Mistake, register
from .core import seeded as _g


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
        args = (logits, temperature, top_p, _g(900 + seed))
        cases.append(Case(args, _sample_probe(sample_next_token, *args)))
    return cases


def _sample_probe(fn, logits_BV, temperature, top_p, generator):
    """The tokens drawn, and whether drawing them used the generator passed in (its state moved)."""
    g = torch.Generator()
    g.set_state(generator.get_state())  # a copy: the case's own generator is never advanced
    before = g.get_state()
    tokens = fn(logits_BV, temperature, top_p, g)
    return tokens, not torch.equal(g.get_state(), before)


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


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch05.py holds independently written wrong learner files for each of them.
def _rms(z, w_D, eps):
    return F.rms_norm(z, (z.shape[-1],), w_D, eps)


def _post_norm(x, attn, ffn, w_in, w_post, eps=1e-5):
    h = _rms(x + attn(x), w_in, eps)
    return _rms(h + ffn(h), w_post, eps)


def _ffn_reads_x(x, attn, ffn, w_in, w_post, eps=1e-5):
    return x + attn(_rms(x, w_in, eps)) + ffn(_rms(x, w_post, eps))


def _norm_weights_swapped(x, attn, ffn, w_in, w_post, eps=1e-5):
    h = x + attn(_rms(x, w_post, eps))
    return h + ffn(_rms(h, w_in, eps))


def _one_norm_weight(x, attn, ffn, w_in, w_post, eps=1e-5):
    h = x + attn(_rms(x, w_in, eps))
    return h + ffn(_rms(h, w_in, eps))


def _residual_from_normed(x, attn, ffn, w_in, w_post, eps=1e-5):
    n = _rms(x, w_in, eps)
    h = n + attn(n)
    m = _rms(h, w_post, eps)
    return m + ffn(m)


def _no_norm_weight(x, attn, ffn, w_in, w_post, eps=1e-5):
    h = x + attn(_rms(x, None, eps))
    return h + ffn(_rms(h, None, eps))


def _top_p_core(probs, top_p, crossing_stays=True, descending=True, unsort="scatter"):
    p, order = probs.sort(-1, descending=descending)
    before = p.cumsum(-1) - p if crossing_stays else p.cumsum(-1)
    p = p.masked_fill(before >= top_p, 0.0)
    p = p / p.sum(-1, keepdim=True)
    if unsort == "scatter":
        return torch.zeros_like(probs).scatter(-1, order, p)
    return p.gather(-1, order) if unsort == "gather" else p


def _rows_not_normalised(case, got):
    return (got.sum(-1) - 1).abs().max() > 1e-3


def _sampler(temperature_first=True, use_temperature=True, use_top_p=True):
    def wrong(logits, temperature, top_p, generator=None):
        if temperature == 0:
            return logits.argmax(-1)
        if not use_temperature:
            probs = torch.softmax(logits.float(), -1)
        elif temperature_first:
            probs = torch.softmax(logits.float() / temperature, -1)
        else:
            probs = torch.softmax(logits.float(), -1) / temperature
        if use_top_p and top_p < 1:
            probs = top_p_filter(probs, top_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return wrong


def _greedy_from(where):
    @torch.no_grad()
    def wrong(model, ids, n):
        out = ids
        for _ in range(n):
            if where == "first position":
                logits = model(out)[:, 0]
            elif where == "last token only":
                logits = model(out[:, -1:])[:, -1]
            else:  # the prompt every step
                logits = model(ids)[:, -1]
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        return out
    return wrong


def _kept_sliding(pos, C, rope):
    return torch.arange(max(0, pos - C + 1) if rope else 0, pos + 1)


def _kept_without_pos(pos, C, rope):
    return torch.arange(pos // C * C if rope else 0, pos)


def _kept_chunk_everywhere(pos, C, rope):
    return torch.arange(pos // C * C, pos + 1)


def _kept_everything(pos, C, rope):
    return torch.arange(0, pos + 1)


def _kept_slots(pos, C, rope):
    return torch.arange(0, pos % C + 1 if rope else pos + 1)


def _bytes(factor=2, heads="num_key_value_heads", slots="chunk-aware", with_bytes=True):
    def wrong(cfg, B, max_len, bpv):
        total = 0
        for i in range(cfg.num_hidden_layers):
            C = cfg.attention_chunk_size
            n = {"chunk-aware": min(C, max_len) if cfg.is_chunked(i) else max_len,
                 "no min": C if cfg.is_chunked(i) else max_len,
                 "all chunked": min(C, max_len) if C else max_len,
                 "all full": max_len}[slots]
            total += factor * B * getattr(cfg, heads) * n * cfg.head_dim * (bpv if with_bytes else 1)
        return total
    return wrong


register(Exercise(
    "decoder_layer", 5, "decoder_layer", _decoder_cases,
    "pre-norm: h = x + attn(rms(x)·w_in), then out = h + ffn(rms(h)·w_post) — the FFN reads h, "
    "and each sub-block's output is added to its un-normalised input, never normalised afterwards",
    nudge="Two residual branches: which tensor does each branch read, which one does it add its output to, and "
          "which of the two is ever normalised?",
    mistakes=[
        Mistake("you normalised after the residual add (post-norm, as in the original Transformer): Llama 4 is "
                "pre-norm, each branch reads a normalised copy and adds its output to the un-normalised stream",
                wrong=_post_norm),
        Mistake("the FFN branch read x: it must read h = x + attn(…), the stream after the attention branch "
                "(normalised with post_attn_norm_w_D)", wrong=_ffn_reads_x),
        Mistake("the two norm weights are swapped: input_norm_w_D goes before attention, post_attn_norm_w_D "
                "before the FFN", wrong=_norm_weights_swapped),
        Mistake("both norms used input_norm_w_D: the norm before the FFN has its own weight, post_attn_norm_w_D",
                wrong=_one_norm_weight),
        Mistake("the residual adds the normalised x: add each branch's output to the un-normalised stream "
                "(x, then h); the stream itself is never normalised", wrong=_residual_from_normed),
        Mistake("the RMSNorm weights were not applied: multiply each normalised input by its weight",
                wrong=_no_norm_weight),
    ]))
register(Exercise(
    "top_p_filter", 5, "top_p_filter", _top_p_cases,
    "sort descending, keep a token iff cumsum − its own probability < top_p (so the token that "
    "crosses top_p stays), scatter back to the original order, divide by the row sum",
    nudge="Walk down the tokens from the most likely: which one is the last you keep — the one before the "
          "running sum reaches top_p, or the one that makes it reach top_p? And what must each row sum to after?",
    mistakes=[
        Mistake("you dropped the token that crosses top_p: keep a token while the mass BEFORE it is below top_p "
                "(cumsum − p < top_p), so the smallest set reaching top_p is kept",
                wrong=partial(_top_p_core, crossing_stays=False)),
        Mistake("you sorted ascending: the nucleus is made of the MOST likely tokens (sort descending)",
                wrong=partial(_top_p_core, descending=False)),
        Mistake("your result is still in sorted order: scatter the kept probabilities back to token order with "
                "the sort's indices", wrong=partial(_top_p_core, unsort=None)),
        Mistake("gather(-1, order) does not undo a sort: scatter the sorted values back with the same indices "
                "(zeros.scatter(-1, order, p))", wrong=partial(_top_p_core, unsort="gather")),
        Mistake("your rows do not sum to 1: renormalise, divide the kept probabilities by their row sum",
                test=_rows_not_normalised),
    ]))
register(Exercise(
    "sample_next_token", 5, "sample_next_token", _sample_cases,
    "temperature 0: argmax; else softmax(logits.float() / temperature), top-p filter only when "
    "top_p < 1, then one torch.multinomial(probs, 1, generator=generator) and squeeze(-1)", exact=True,
    nudge="The same seeded generator must draw the same tokens as the package: where does the temperature go "
          "(before or after the softmax), and who supplies the random numbers?",
    probe=_sample_probe, mistakes=[
        Mistake("temperature 0 means greedy: return logits.argmax(-1) before dividing by the temperature",
                raises=r"probability tensor contains|ZeroDivisionError"),
        Mistake("your draws ignore the generator passed in: pass it on, torch.multinomial(probs, 1, "
                "generator=generator)", test=lambda case, got: case.args[1] > 0 and got[1] is False),
        Mistake("torch.multinomial returns [B, 1]: squeeze(-1) to return one token per row, [B]",
                test=lambda case, got: tuple(got[0].shape) == (case.args[0].shape[0], 1)),
        Mistake("the temperature divides the LOGITS, before the softmax: softmax(logits / T), not softmax(logits) "
                "/ T", wrong=_sampler(temperature_first=False)),
        Mistake("the temperature was not applied: sample from softmax(logits / temperature)",
                wrong=_sampler(use_temperature=False)),
        Mistake("the top-p filter was not applied: when top_p < 1, filter the probabilities before drawing",
                wrong=_sampler(use_top_p=False)),
    ]))
register(Exercise(
    "greedy_generate", 5, "greedy_generate", _greedy_cases,
    "each step: logits = model(ids) → take [:, -1] (the last position) → argmax(-1) → append with "
    "torch.cat along dim 1; run it n times", exact=True,
    nudge="model(ids) gives one row of logits per position: which position predicts the NEXT token, and what "
          "does the model need to see at each step when there is no cache?",
    mistakes=[
        Mistake("you took the logits of position 0: the next token is predicted by the LAST position, "
                "logits[:, -1]", wrong=_greedy_from("first position")),
        Mistake("you fed only the last token: without a KV cache the model must see the whole sequence so far "
                "at every step", wrong=_greedy_from("last token only")),
        Mistake("every step ran the model on the prompt alone: feed the sequence with the tokens appended so far",
                wrong=_greedy_from("the prompt every step")),
        Mistake("you returned only the new tokens: return the prompt followed by them, [B, T + n]",
                test=lambda case, got: tuple(got.shape) == (case.args[1].shape[0], case.args[2])),
        Mistake("you appended the wrong number of tokens: run the loop exactly n times",
                test=lambda case, got: got.shape[1] != case.args[1].shape[1] + case.args[2]),
    ]))
register(Exercise(
    "kept_positions", 5, "kept_positions", _kept_cases,
    "NoPE: arange(0, pos + 1); RoPE: arange(pos // C * C, pos + 1) — a fixed chunk, not a sliding "
    "window of the last C positions", exact=True,
    nudge="Chapter 04's chunked mask: query p sees key s iff ⌊s/C⌋ = ⌊p/C⌋. Which keys can the NEXT queries "
          "still see, in a RoPE layer and in a NoPE layer?",
    mistakes=[
        Mistake("that is a sliding window of the last C positions: a RoPE layer keeps the FIXED chunk that pos "
                "lies in, from ⌊pos/C⌋·C to pos", wrong=_kept_sliding),
        Mistake("position pos itself is missing: the tokens 0 … pos have gone through the model, so pos is kept",
                wrong=_kept_without_pos),
        Mistake("you chunked the NoPE layer too: global attention keeps every position 0 … pos",
                wrong=_kept_chunk_everywhere),
        Mistake("a RoPE layer does not keep everything: only pos's chunk, from ⌊pos/C⌋·C to pos",
                wrong=_kept_everything),
        Mistake("those are slot numbers inside the chunk: return the absolute positions, from ⌊pos/C⌋·C to pos",
                wrong=_kept_slots),
    ]))
register(Exercise(
    "kv_cache_bytes", 5, "kv_cache_bytes", _bytes_cases,
    "sum over layers of 2 (K and V) · batch · num_key_value_heads · slots · head_dim · bytes_per_value, "
    "slots = min(attention_chunk_size, max_len) if config.is_chunked(i) else max_len", exact=True,
    nudge="What does one layer store per token and per sequence (how many tensors, how many heads of what size), "
          "and how many token slots does a chunked layer need at most?",
    mistakes=[
        Mistake("the factor 2 is missing: each layer stores K AND V", wrong=_bytes(factor=1)),
        Mistake("you counted num_attention_heads: the cache holds num_key_value_heads heads (GQA shares them)",
                wrong=_bytes(heads="num_attention_heads")),
        Mistake("you counted values, not bytes: multiply by bytes_per_value", wrong=_bytes(with_bytes=False)),
        Mistake("a chunked layer needs min(C, max_len) slots: never more than max_len",
                wrong=_bytes(slots="no min")),
        Mistake("every layer got max_len slots: that is the naive cache; chunked layers (config.is_chunked(i)) need "
                "only min(C, max_len)", wrong=_bytes(slots="all full")),
        Mistake("you chunked every layer: NoPE layers attend globally and keep max_len slots; test "
                "config.is_chunked(i)", wrong=_bytes(slots="all chunked")),
        Mistake("with attention_chunk_size None no layer is chunked: test config.is_chunked(i), not only whether "
                "the layer uses RoPE", raises=r"NoneType"),
    ]))
