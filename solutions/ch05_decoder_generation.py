"""Chapter 05 exercises: the decoder layer, choosing the next token, generating, and the chunk-aware KV cache.

Fill in each function between the markers; check it in the notebook with `check("name", ex.function)` or grade the
whole chapter with `minillama4 grade 5`. Shapes: B batch, T tokens, D model width, V vocabulary.
"""

import torch


def decoder_layer(x_BTD: torch.Tensor, attn, ffn, input_norm_w_D: torch.Tensor, post_attn_norm_w_D: torch.Tensor,
                  eps: float = 1e-5) -> torch.Tensor:
    """One pre-norm Llama 4 decoder layer, given its two sub-blocks as functions [B, T, D] → [B, T, D]:

        h   = x + attn(RMSNorm(x; w_in))
        out = h + ffn(RMSNorm(h; w_post))

    RMSNorm(x; w) = x / sqrt(mean(x²) + eps) · w over the last dimension (chapter 01: normalise in float32, cast
    back to x's dtype, then multiply by the weight). Returns out [B, T, D]."""
    ### BEGIN SOLUTION
    def rms(z, w_D):
        zf = z.float()
        return (zf * torch.rsqrt(zf.pow(2).mean(-1, keepdim=True) + eps)).type_as(z) * w_D  # z / √(mean(z²) + ε) · w

    h_BTD = x_BTD + attn(rms(x_BTD, input_norm_w_D))  # first residual branch: attention
    return h_BTD + ffn(rms(h_BTD, post_attn_norm_w_D))  # second residual branch: FFN (MoE or dense) on h, not x
    ### END SOLUTION


def top_p_filter(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering of each row of probabilities [B, V]: keep the smallest set of most likely tokens whose
    probabilities add up to at least top_p, set the others to 0, and renormalise so each row sums to 1.
    A token is kept iff the mass of the tokens more likely than it is still below top_p, so the most likely token
    always stays (and so does the token that crosses top_p). Returns [B, V] in the original token order."""
    ### BEGIN SOLUTION
    p_sorted_BV, order_BV = probs_BV.sort(-1, descending=True)
    before_BV = p_sorted_BV.cumsum(-1) - p_sorted_BV  # mass of the strictly more likely tokens
    p_sorted_BV = p_sorted_BV.masked_fill(before_BV >= top_p, 0.0)
    kept_BV = torch.zeros_like(probs_BV).scatter_(-1, order_BV, p_sorted_BV)  # back to token order
    return kept_BV / kept_BV.sum(-1, keepdim=True)  # renormalise
    ### END SOLUTION


def sample_next_token(logits_BV: torch.Tensor, temperature: float, top_p: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, ids [B]:
    temperature 0 → argmax (greedy); otherwise p = softmax(logits / temperature) computed in float32, then (only if
    top_p < 1) the top-p filter, then ONE call `torch.multinomial(p, 1, generator=generator)` for the whole batch
    (so that the same seeded generator draws the same tokens as `minillama4.sampling.sample_next_token`)."""
    ### BEGIN SOLUTION
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs_BV = torch.softmax(logits_BV.float() / temperature, dim=-1)  # softmax(z / τ)
    if top_p < 1:
        probs_BV = top_p_filter(probs_BV, top_p)
    return torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)  # [B]
    ### END SOLUTION


@torch.no_grad()
def greedy_generate(model, ids_BT: torch.Tensor, n: int) -> torch.Tensor:
    """Append n greedy tokens to each row of ids_BT, the plain way: no KV cache, each step runs the model on the
    whole sequence so far (`model(ids)` → logits [B, T, V]) and appends the argmax of the last position's logits.
    Returns [B, T + n]."""
    ### BEGIN SOLUTION
    for _ in range(n):
        logits_BV = model(ids_BT)[:, -1]  # the prediction after the last token
        next_B = logits_BV.argmax(-1)
        ids_BT = torch.cat([ids_BT, next_B[:, None]], dim=1)
    return ids_BT
    ### END SOLUTION


def kept_positions(pos: int, chunk_size: int, is_rope_layer: bool) -> torch.Tensor:
    """After a sequence's tokens 0 … pos have gone through the model, which absolute positions must one layer's KV
    cache still hold, so that the next tokens can attend to everything they are allowed to see?
    A NoPE layer (global attention) keeps all of them. A RoPE layer (chunked attention: query p sees key s only if
    ⌊s / C⌋ = ⌊p / C⌋) keeps only the chunk that position pos lies in. Returns an int64 tensor of positions, ascending."""
    ### BEGIN SOLUTION
    start = pos // chunk_size * chunk_size if is_rope_layer else 0  # first position of pos's chunk, or 0
    return torch.arange(start, pos + 1)
    ### END SOLUTION


def kv_cache_bytes(config, batch_size: int, max_len: int, bytes_per_value: int) -> int:
    """Bytes a chunk-aware KV cache allocates for `batch_size` sequences of up to `max_len` tokens (e.g.
    bytes_per_value = 2 for bfloat16). Every layer i stores K and V, each [batch, num_key_value_heads, slots, head_dim];
    slots = max_len, except for chunked layers (`config.is_chunked(i)`: RoPE layers with an attention chunk size C),
    which never need more than min(C, max_len)."""
    ### BEGIN SOLUTION
    total = 0
    for i in range(config.num_hidden_layers):
        C = config.attention_chunk_size
        slots = min(C, max_len) if config.is_chunked(i) else max_len  # RoPE layers: one chunk at most
        total += 2 * batch_size * config.num_key_value_heads * slots * config.head_dim * bytes_per_value  # K and V
    return total
    ### END SOLUTION
