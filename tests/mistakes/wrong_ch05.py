"""Chapter 05: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "decoder_layer": [
        ("post-norm", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    def norm(t, w):
        return t / torch.sqrt(t.pow(2).mean(dim=-1, keepdim=True) + eps) * w
    h = norm(x_BTD + attn(x_BTD), input_norm_w_D)
    return norm(h + ffn(h), post_attn_norm_w_D)
''', ["post-norm", "pre-norm"]),
        ("ffn-reads-x", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    def norm(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w
    a = attn(norm(x_BTD, input_norm_w_D))
    f = ffn(norm(x_BTD, post_attn_norm_w_D))
    return x_BTD + a + f
''', ["FFN branch read x", "h = x"]),
        ("weights-swapped", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    def norm(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w
    h = x_BTD + attn(norm(x_BTD, post_attn_norm_w_D))
    return h + ffn(norm(h, input_norm_w_D))
''', ["swapped"]),
        ("one-weight-twice", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    def norm(t):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * input_norm_w_D
    h = x_BTD + attn(norm(x_BTD))
    return h + ffn(norm(h))
''', ["post_attn_norm_w_D", "own weight"]),
        ("residual-from-normed", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    x = x_BTD * torch.rsqrt(x_BTD.pow(2).mean(-1, keepdim=True) + eps) * input_norm_w_D
    x = x + attn(x)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * post_attn_norm_w_D
    x = x + ffn(x)
    return x
''', ["adds the normalised x", "never normalised"]),
        ("no-norm-weight", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    def norm(t):
        return t / (t.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    h = x_BTD + attn(norm(x_BTD))
    return h + ffn(norm(h))
''', ["weights were not applied"]),
    ],
    "top_p_filter": [
        ("crossing-token-dropped", '''
def top_p_filter(probs_BV, top_p):
    sorted_p, idx = torch.sort(probs_BV, dim=-1, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    sorted_p[cum > top_p] = 0
    out = torch.zeros_like(probs_BV)
    out.scatter_(1, idx, sorted_p)
    return out / out.sum(dim=1, keepdim=True)
''', ["crosses top_p", "BEFORE"]),
        ("not-renormalised", '''
def top_p_filter(probs_BV, top_p):
    p, order = probs_BV.sort(-1, descending=True)
    drop = p.cumsum(-1) - p >= top_p
    return torch.zeros_like(probs_BV).scatter(-1, order, p.masked_fill(drop, 0.0))
''', ["sum to 1", "renormalise"]),
        ("crossing-dropped-and-not-renormalised", '''
def top_p_filter(probs_BV, top_p):
    p, order = probs_BV.sort(-1, descending=True)
    p = torch.where(p.cumsum(-1) < top_p, p, torch.zeros_like(p))
    return torch.zeros_like(probs_BV).scatter(-1, order, p)
''', ["renormalise"]),
        ("ascending-sort", '''
def top_p_filter(probs_BV, top_p):
    p, order = torch.sort(probs_BV, dim=-1)
    before = torch.cumsum(p, dim=-1) - p
    p = torch.where(before < top_p, p, 0.0)
    out = torch.zeros_like(probs_BV).scatter(-1, order, p)
    return out / out.sum(-1, keepdim=True)
''', ["ascending", "descending"]),
        ("left-sorted", '''
def top_p_filter(probs_BV, top_p):
    p = probs_BV.sort(-1, descending=True).values
    p = p * ((p.cumsum(-1) - p) < top_p)
    return p / p.sum(-1, keepdim=True)
''', ["sorted order", "scatter"]),
        ("gather-to-unsort", '''
def top_p_filter(probs_BV, top_p):
    p, order = probs_BV.sort(-1, descending=True)
    p = p.masked_fill(p.cumsum(-1) - p >= top_p, 0)
    p = p / p.sum(-1, keepdim=True)
    return torch.gather(p, -1, order)
''', ["gather", "does not undo a sort"]),
    ],
    "sample_next_token": [
        ("temperature-zero-divides", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
''', ["temperature 0", "greedy", "argmax"]),
        ("no-generator", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, 1).squeeze(-1)
''', ["generator"]),
        ("not-squeezed", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return logits_BV.argmax(-1, keepdim=True)
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, 1, generator=generator)
''', ["squeeze", r"\[B, 1\]"]),
        ("temperature-after-softmax", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs = logits_BV.float().softmax(-1)
    probs = probs / temperature
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
''', ["before the softmax"]),
        ("temperature-ignored", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs = logits_BV.float().softmax(-1)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
''', ["temperature was not applied"]),
        ("no-top-p", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs = (logits_BV.float() / temperature).softmax(-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
''', ["top-p filter was not applied"]),
    ],
    "greedy_generate": [
        ("position-0", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    for _ in range(n):
        nxt = model(ids_BT)[:, 0, :].argmax(dim=-1)
        ids_BT = torch.cat((ids_BT, nxt.unsqueeze(1)), 1)
    return ids_BT
''', ["position 0", "LAST"]),
        ("last-token-only", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    out = ids_BT
    for _ in range(n):
        logits = model(out[:, -1:])
        out = torch.cat([out, logits[:, -1].argmax(-1)[:, None]], dim=1)
    return out
''', ["only the last token", "whole sequence"]),
        ("prompt-every-step", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    out = ids_BT.clone()
    for _ in range(n):
        nxt = model(ids_BT)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=-1)
    return out
''', ["prompt alone"]),
        ("only-new-tokens", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    new = []
    for _ in range(n):
        nxt = model(ids_BT)[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        ids_BT = torch.cat([ids_BT, nxt], dim=1)
    return torch.cat(new, dim=1)
''', ["only the new tokens", r"T \+ n"]),
        ("one-step-short", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    for _ in range(1, n):
        nxt = model(ids_BT)[:, -1].argmax(-1, keepdim=True)
        ids_BT = torch.cat([ids_BT, nxt], dim=1)
    return ids_BT
''', ["wrong number of tokens", "exactly n"]),
    ],
    "kept_positions": [
        ("sliding-window", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    if not is_rope_layer:
        return torch.arange(pos + 1)
    return torch.arange(pos + 1)[-chunk_size:]
''', ["sliding window", "FIXED chunk"]),
        ("without-pos", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    start = (pos // chunk_size) * chunk_size if is_rope_layer else 0
    return torch.arange(start, pos)
''', ["pos itself is missing"]),
        ("chunked-nope", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    return torch.arange(pos - pos % chunk_size, pos + 1)
''', ["NoPE", "every position"]),
        ("rope-keeps-all", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    return torch.arange(0, pos + 1, dtype=torch.long)
''', ["does not keep everything"]),
        ("slots-not-positions", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    n = pos % chunk_size + 1 if is_rope_layer else pos + 1
    return torch.arange(n)
''', ["slot", "absolute positions"]),
    ],
    "kv_cache_bytes": [
        ("no-factor-2", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    c = config
    slots = [min(c.attention_chunk_size, max_len) if c.is_chunked(i) else max_len for i in range(c.num_hidden_layers)]
    return sum(batch_size * c.num_key_value_heads * s * c.head_dim * bytes_per_value for s in slots)
''', ["factor 2", "K AND V"]),
        ("attention-heads", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    total = 0
    for i in range(config.num_hidden_layers):
        slots = min(config.attention_chunk_size, max_len) if config.is_chunked(i) else max_len
        total += 2 * batch_size * config.num_attention_heads * slots * config.head_dim * bytes_per_value
    return total
''', ["num_attention_heads", "num_key_value_heads"]),
        ("values-not-bytes", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    total = 0
    for i in range(config.num_hidden_layers):
        slots = min(config.attention_chunk_size, max_len) if config.is_chunked(i) else max_len
        total += 2 * batch_size * config.num_key_value_heads * slots * config.head_dim
    return total
''', ["values, not bytes"]),
        ("chunk-without-min", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    per_slot = 2 * batch_size * config.num_key_value_heads * config.head_dim * bytes_per_value
    slots = 0
    for i in range(config.num_hidden_layers):
        slots += config.attention_chunk_size if config.is_chunked(i) else max_len
    return per_slot * slots
''', [r"min\(C, max_len\)", "never more than max_len"]),
        ("naive-cache", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    return (2 * config.num_hidden_layers * batch_size * config.num_key_value_heads * max_len * config.head_dim
            * bytes_per_value)
''', ["naive", "is_chunked"]),
        ("all-layers-chunked", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    C = config.attention_chunk_size
    slots = max_len if C is None else min(C, max_len)
    return 2 * config.num_hidden_layers * batch_size * config.num_key_value_heads * slots * config.head_dim * \\
        bytes_per_value
''', ["NoPE", "is_chunked"]),
        ("rope-test-only", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    total = 0
    for i in range(config.num_hidden_layers):
        slots = min(config.attention_chunk_size, max_len) if config.uses_rope(i) else max_len
        total += 2 * batch_size * config.num_key_value_heads * slots * config.head_dim * bytes_per_value
    return total
''', ["None", "is_chunked"]),
    ],
}

RIGHT = {
    "decoder_layer": [("F.rms_norm", '''
import torch.nn.functional as F

def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    D = x_BTD.shape[-1]
    h = x_BTD + attn(F.rms_norm(x_BTD, (D,), input_norm_w_D, eps))
    return h + ffn(F.rms_norm(h, (D,), post_attn_norm_w_D, eps))
'''), ("divide-by-sqrt", '''
def decoder_layer(x_BTD, attn, ffn, input_norm_w_D, post_attn_norm_w_D, eps=1e-5):
    out = x_BTD
    for branch, w in ((attn, input_norm_w_D), (ffn, post_attn_norm_w_D)):
        normed = out / torch.sqrt((out * out).mean(-1, keepdim=True) + eps) * w
        out = out + branch(normed)
    return out
''')],
    "top_p_filter": [("shifted-remove-mask", '''
def top_p_filter(probs_BV, top_p):
    p, order = probs_BV.sort(-1, descending=True)
    remove = p.cumsum(-1) > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    p = p.masked_fill(remove, 0.0)
    p = p.gather(-1, order.argsort(-1))
    return p / p.sum(-1, keepdim=True)
'''), ("row-loop", '''
def top_p_filter(probs_BV, top_p):
    out = torch.zeros_like(probs_BV)
    for b in range(probs_BV.shape[0]):
        total = 0.0
        for v in probs_BV[b].argsort(descending=True).tolist():
            if total >= top_p:
                break
            out[b, v] = probs_BV[b, v]
            total += probs_BV[b, v].item()
    return out / out.sum(-1, keepdim=True)
''')],
    "sample_next_token": [("one-draw-per-row", '''
def sample_next_token(logits_BV, temperature, top_p, generator=None):
    if temperature == 0:
        return torch.argmax(logits_BV, dim=-1)
    probs = torch.nn.functional.softmax(logits_BV.to(torch.float32) / temperature, dim=-1)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)
    return torch.cat([torch.multinomial(row, 1, generator=generator) for row in probs])
''')],
    "greedy_generate": [("argmax-then-last", '''
@torch.no_grad()
def greedy_generate(model, ids_BT, n):
    B, T = ids_BT.shape
    out = torch.empty(B, T + n, dtype=ids_BT.dtype)
    out[:, :T] = ids_BT
    for t in range(T, T + n):
        out[:, t] = model(out[:, :t]).argmax(-1)[:, -1]
    return out
''')],
    "kept_positions": [("modulo", '''
def kept_positions(pos, chunk_size, is_rope_layer):
    first = pos - pos % chunk_size if is_rope_layer else 0
    return torch.tensor(list(range(first, pos + 1)), dtype=torch.int64)
''')],
    "kv_cache_bytes": [("per-token-bytes", '''
def kv_cache_bytes(config, batch_size, max_len, bytes_per_value):
    per_token = 2 * config.num_key_value_heads * config.head_dim * bytes_per_value * batch_size
    slots = sum(min(config.attention_chunk_size, max_len) if config.is_chunked(i) else max_len
                for i in range(config.num_hidden_layers))
    return per_token * slots
''')],
}
