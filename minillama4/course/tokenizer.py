"""A small byte-level BPE tokenizer, trained by the package on the course corpus.

Why not Llama 4's own tokenizer? It has 202,048 tokens: the embedding and lm_head alone would be 50× the rest of a
toy model. A 512-token byte-level BPE keeps the same *kind* of tokenizer (bytes in, so any text encodes; merges
learned from data) at a size a laptop trains in minutes.

    1. pre-tokenize: split text into words, spaces, punctuation runs and single digits (one digit per token keeps
       arithmetic learnable: "1234" never becomes one opaque token);
    2. start from the 256 bytes;
    3. repeatedly merge the most frequent adjacent pair of tokens into a new token, until the vocabulary is full.

Token ids: first the special tokens (Llama 4's names, so chat and image prompts look like the real ones), then the
256 bytes, then the merges in the order they were learned. Encoding applies merges by that order (lowest first).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

SPECIAL_TOKENS = [
    "<|finetune_right_pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>",
    "<|eom|>", "<|eot|>", "<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>",
    "<|tile_y_separator|>", "<|python_start|>", "<|python_end|>", "<|reserved_special_token_0|>",
]
# words (with their leading space), single digits, runs of other symbols, runs of whitespace
PRETOKENIZE = re.compile(r" ?[A-Za-z]+| ?\d| ?[^\sA-Za-z\d]+|\s+(?!\S)|\s+")
ASSET = Path(__file__).parent / "assets" / "tokenizer.json"


def train_bpe(text: str, num_merges: int, first_id: int) -> list[tuple[int, int]]:
    """Learn num_merges merges from text. Token ids of bytes are first_id + byte; merge i creates id
    first_id + 256 + i. Ties between equally frequent pairs go to the smallest pair (deterministic)."""
    words = Counter(PRETOKENIZE.findall(text))
    seqs = [[first_id + b for b in w.encode("utf-8")] for w in words]
    freqs = list(words.values())
    merges = []
    for i in range(num_merges):
        pairs = Counter()
        for seq, f in zip(seqs, freqs):
            for a, b in zip(seq, seq[1:]):
                pairs[a, b] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then smallest
        new = first_id + 256 + i
        merges.append(best)
        for j, seq in enumerate(seqs):
            if len(seq) > 1:
                seqs[j] = _merge(seq, best, new)
    return merges


def _merge(seq: list[int], pair: tuple[int, int], new: int) -> list[int]:
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == pair[0] and seq[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


class BPETokenizer:
    def __init__(self, merges: list[tuple[int, int]], special_tokens: list[str] = SPECIAL_TOKENS):
        self.special_tokens = list(special_tokens)
        self.special_ids = {s: i for i, s in enumerate(self.special_tokens)}
        self.first_byte = len(self.special_tokens)
        self.merges = [tuple(m) for m in merges]
        self.rank = {m: i for i, m in enumerate(self.merges)}
        self.vocab_size = self.first_byte + 256 + len(self.merges)
        # bytes of every token id (specials decode to their name)
        self.token_bytes = [s.encode() for s in self.special_tokens] + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in self.special_tokens) + ")")
        self._encode_word = lru_cache(maxsize=1 << 16)(self._encode_word_uncached)

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: list[str] = SPECIAL_TOKENS) -> "BPETokenizer":
        num_merges = vocab_size - len(special_tokens) - 256
        if num_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is smaller than {len(special_tokens)} specials + 256 bytes")
        return cls(train_bpe(text, num_merges, len(special_tokens)), special_tokens)

    @classmethod
    def load(cls, path: str | Path = ASSET) -> "BPETokenizer":
        d = json.loads(Path(path).read_text())
        return cls([tuple(m) for m in d["merges"]], d["special_tokens"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"special_tokens": self.special_tokens, "merges": self.merges}) + "\n")

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        seq = [self.first_byte + b for b in word.encode("utf-8")]
        while len(seq) > 1:  # apply the earliest-learned merge present, until none applies
            r, pair = min((self.rank.get(p, len(self.rank)), p) for p in zip(seq, seq[1:]))
            if r == len(self.rank):
                break
            seq = _merge(seq, pair, self.first_byte + 256 + r)
        return tuple(seq)

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Text → token ids. With allow_special, special-token names in the text become their ids."""
        ids = []
        parts = self._special_re.split(text) if allow_special else [text]
        for part in parts:
            if allow_special and part in self.special_ids:
                ids.append(self.special_ids[part])
                continue
            for word in PRETOKENIZE.findall(part):
                ids.extend(self._encode_word(word))
        return ids

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        """One token as text (for pictures): specials by name, partial UTF-8 shown with replacement marks."""
        return self.token_bytes[int(i)].decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size
