# GENERATED from solutions/ch05_decoder_generation.py by scripts/make_exercises.py (stub ef1f3c7f9d29): this is your file, fill in the stubs.
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
    # YOUR CODE HERE
    raise NotImplementedError()


def top_p_filter(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering of each row of probabilities [B, V]: keep the smallest set of most likely tokens whose
    probabilities add up to at least top_p, set the others to 0, and renormalise so each row sums to 1.
    A token is kept iff the mass of the tokens more likely than it is still below top_p, so the most likely token
    always stays (and so does the token that crosses top_p). Returns [B, V] in the original token order."""
    # YOUR CODE HERE
    raise NotImplementedError()


def sample_next_token(logits_BV: torch.Tensor, temperature: float, top_p: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, ids [B]:
    temperature 0 → argmax (greedy); otherwise p = softmax(logits / temperature) computed in float32, then (only if
    top_p < 1) the top-p filter, then ONE call `torch.multinomial(p, 1, generator=generator)` for the whole batch
    (so that the same seeded generator draws the same tokens as `minillama4.sampling.sample_next_token`)."""
    # YOUR CODE HERE
    raise NotImplementedError()


@torch.no_grad()
def greedy_generate(model, ids_BT: torch.Tensor, n: int) -> torch.Tensor:
    """Append n greedy tokens to each row of ids_BT, the plain way: no KV cache, each step runs the model on the
    whole sequence so far (`model(ids)` → logits [B, T, V]) and appends the argmax of the last position's logits.
    Returns [B, T + n]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def kept_positions(pos: int, chunk_size: int, is_rope_layer: bool) -> torch.Tensor:
    """After a sequence's tokens 0 … pos have gone through the model, which absolute positions must one layer's KV
    cache still hold, so that the next tokens can attend to everything they are allowed to see?
    A NoPE layer (global attention) keeps all of them. A RoPE layer (chunked attention: query p sees key s only if
    ⌊s / C⌋ = ⌊p / C⌋) keeps only the chunk that position pos lies in. Returns an int64 tensor of positions, ascending."""
    # YOUR CODE HERE
    raise NotImplementedError()


def kv_cache_bytes(config, batch_size: int, max_len: int, bytes_per_value: int) -> int:
    """Bytes a chunk-aware KV cache allocates for `batch_size` sequences of up to `max_len` tokens (e.g.
    bytes_per_value = 2 for bfloat16). Every layer i stores K and V, each [batch, num_key_value_heads, slots, head_dim];
    slots = max_len, except for chunked layers (`config.is_chunked(i)`: RoPE layers with an attention chunk size C),
    which never need more than min(C, max_len)."""
    # YOUR CODE HERE
    raise NotImplementedError()
