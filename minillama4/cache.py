"""A KV cache that knows about chunked attention.

A NoPE layer attends to the whole past, so it keeps every key and value: memory grows with each token.
A RoPE layer only ever attends inside its current chunk of C tokens: once position p crosses a multiple of C,
nothing before it is visible again. So a RoPE layer keeps at most C positions, and starts over at each chunk
boundary. With Scout (36 RoPE layers, C = 8192) that caps three quarters of the cache at a fixed size.

Buffers are allocated once, up front, for `max_len` tokens; asking for more is an error, not a silent overwrite.

Slots: a NoPE layer keeps position p in slot p, a RoPE layer in slot p mod C (its chunk starts at slot 0). An eager
step reads the filled slots [0, length); a compiled decode step (`StaticDecode`) writes its token's slot in place and
reads every slot, masking those not filled yet, so its shapes never change and nothing is read back to the host.
"""

import numbers

import torch

from .config import Llama4Config
from .memory import ensure_fits


class LayerKV:
    """One layer's kept keys and values: slots [0, length) hold absolute positions [start, start + length)."""

    def __init__(self, batch: int, kv_heads: int, slots: int, head_dim: int, chunk_size: int | None, dtype, device):
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=device)  # k_BKSD
        self.v = torch.zeros_like(self.k)  # v_BKSD
        self.chunk_size, self.start, self.length = chunk_size, 0, 0

    def enter(self, p0: int) -> None:
        """Bookkeeping before writing position p0: it must follow the kept positions; a new chunk starts over."""
        if p0 != self.start + self.length:
            raise RuntimeError(f"KV cache out of step: expected position {self.start + self.length}, got {p0}")
        C = self.chunk_size
        if C is not None and p0 // C != self.start // C:  # a new chunk began: the old one is invisible from now on
            self.start, self.length = p0 // C * C, 0

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, positions: torch.Tensor, p0: int | None = None):
        """Add T new keys/values (positions p0 … p0+T-1). Returns the keys, values and positions the new queries
        may look at (kept past + new); the caller's mask narrows them further to the right chunk.
        p0: the first position as a Python int, when the caller knows it (KVCache does): reading it from
        `positions` would make a GPU wait for the device at every layer."""
        p0, T, C = int(positions[0]) if p0 is None else p0, k_new.shape[2], self.chunk_size
        self.enter(p0)
        n = self.length
        if n + T <= self.k.shape[2]:  # fits: write in place, return views
            self.k[:, :, n:n + T], self.v[:, :, n:n + T] = k_new, v_new
            self.length = n + T
            pos = torch.arange(self.start, p0 + T, device=positions.device)
            return self.k[:, :, :n + T], self.v[:, :, :n + T], pos
        # a RoPE layer's prefill that spans several chunks: attend over everything, keep only the last chunk
        k_all, v_all = torch.cat([self.k[:, :, :n], k_new], 2), torch.cat([self.v[:, :, :n], v_new], 2)
        pos = torch.arange(self.start, p0 + T, device=positions.device)
        keep_from = (p0 + T - 1) // C * C
        off = keep_from - self.start
        self.length = k_all.shape[2] - off
        self.k[:, :, :self.length], self.v[:, :, :self.length] = k_all[:, :, off:], v_all[:, :, off:]
        self.start = keep_from
        return k_all, v_all, pos


class KVCache:
    """Keys and values of every layer for a batch of sequences of up to `max_len` tokens."""

    static = False  # attention reads the filled slots only (see StaticDecode)

    def __init__(self, config: Llama4Config, batch_size: int, max_len: int, dtype=torch.float32, device="cpu"):
        for name, v in (("batch_size", batch_size), ("max_len", max_len)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"KV cache {name} must be a positive int, got {v!r}")
        if max_len > config.max_position_embeddings:
            raise ValueError(f"KV cache of {max_len} tokens exceeds max_position_embeddings={config.max_position_embeddings}")
        self.max_len, self.pos = max_len, 0
        C = config.attention_chunk_size
        ensure_fits(kv_cache_bytes(config, max_len, batch_size, dtype.itemsize), device,
                    f"a KV cache of {batch_size} × {max_len} tokens")
        self.layers = [
            LayerKV(batch_size, config.num_key_value_heads, min(C, max_len) if config.is_chunked(i) else max_len,
                    config.head_dim, C if config.is_chunked(i) else None, dtype, device)
            for i in range(config.num_hidden_layers)
        ]

    def check(self, num_new: int) -> None:
        if self.pos + num_new > self.max_len:
            raise ValueError(f"KV cache full: it holds {self.max_len} tokens, {self.pos} are used and {num_new} more "
                             f"were asked for; make a larger cache (max_len) or shorten the request")

    def positions(self, num_new: int, device) -> torch.Tensor:
        """Absolute positions of the next num_new tokens: [pos, pos + num_new)."""
        return torch.arange(self.pos, self.pos + num_new, device=device)

    def update(self, layer_idx: int, k, v, positions):
        return self.layers[layer_idx].update(k, v, positions, p0=self.pos)  # the new tokens start at self.pos

    def advance(self, num_new: int) -> None:
        self.pos += num_new

    def advance_decode(self) -> None:
        """Record one token written by a `StaticDecode` step at position pos: the same bookkeeping as an eager step."""
        for L in self.layers:
            L.enter(self.pos)
            L.length += 1
        self.pos += 1

    def nbytes(self) -> int:
        """Bytes allocated for keys and values, all layers."""
        return sum(2 * L.k.numel() * L.k.element_size() for L in self.layers)

    def bytes_per_token(self) -> int:
        """Bytes of K and V one more token of context costs once past the first chunk (the NoPE layers only)."""
        return sum(2 * L.k[:, :, 0].numel() * L.k.element_size() for L in self.layers if L.chunk_size is None)

    def used_bytes(self) -> int:
        """Bytes of K and V holding tokens the next query can still see (the current chunk for RoPE layers, the whole
        past for NoPE layers): what a cache that grew on demand would hold now."""
        return sum(2 * L.length * L.k[:, :, 0].numel() * L.k.element_size() for L in self.layers)

    def memory_report(self) -> str:
        """One line: allocated, in use, and the per-token cost past the first chunk."""
        return (f"KV cache: {self.nbytes() / 2**20:.2f} MiB allocated for {self.max_len} tokens, "
                f"{self.used_bytes() / 2**20:.2f} MiB in use at {self.pos} tokens, "
                f"{self.bytes_per_token() / 1024:.1f} KiB per further token (NoPE layers only)")


class StaticDecode:
    """A KVCache as one compiled decode step (one token per row) sees it. The position is a device tensor pos_1 [1]
    that the caller sets before the step; each layer writes its new key and value into slot p (NoPE) or p mod C
    (RoPE) in place, and attention reads every slot of the fixed-size buffers, slot s standing for position s (NoPE)
    or ⌊p / C⌋·C + s (RoPE). The causal mask hides the slots not written yet and the stale slots of a finished
    chunk: both stand for positions after p. Nothing here reads a number back to the host or changes a shape.
    The caller checks room before the step (`KVCache.check`) and records it after (`KVCache.advance_decode`)."""

    static = True  # attention must mask: every slot is read

    def __init__(self, cache: KVCache, pos_1: torch.Tensor):
        self.cache, self.pos_1 = cache, pos_1

    def check(self, num_new: int) -> None:
        if num_new != 1:
            raise ValueError(f"a static decode step takes one token per row, got {num_new}")

    def positions(self, num_new: int, device) -> torch.Tensor:
        return self.pos_1

    def update(self, layer_idx: int, k_new, v_new, positions):
        L = self.cache.layers[layer_idx]
        C = L.chunk_size
        slot_1 = positions if C is None else positions % C
        L.k[:, :, slot_1], L.v[:, :, slot_1] = k_new, v_new  # in place, at a slot the device knows
        pos_S = torch.arange(L.k.shape[2], device=positions.device)  # the position each slot stands for
        if C is not None:
            pos_S = pos_S + positions // C * C
        return L.k, L.v, pos_S

    def advance(self, num_new: int) -> None:
        pass  # recorded outside the step: KVCache.advance_decode


def kv_cache_bytes(config: Llama4Config, num_tokens: int, batch_size: int = 1, dtype_bytes: int = 2,
                   chunk_aware: bool = True) -> int:
    """Bytes of keys and values for num_tokens of context, from the config alone. A NoPE layer keeps every token;
    a chunked RoPE layer keeps at most C = attention_chunk_size tokens when chunk_aware (all of them otherwise).

        bytes = Σ_layers kept_tokens · 2 (K and V) · batch · kv_heads · head_dim · dtype_bytes

    Scout in bf16: 192 KiB per token naively; chunk-aware, 36 layers × 8192 tokens (1.125 GiB) + 48 KiB per token."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    per_token_layer = 2 * batch_size * config.num_key_value_heads * config.head_dim * dtype_bytes
    C = config.attention_chunk_size
    return sum(per_token_layer * (min(num_tokens, C) if chunk_aware and config.is_chunked(i) else num_tokens)
               for i in range(config.num_hidden_layers))
