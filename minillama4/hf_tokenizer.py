"""The tokenizer of a real checkpoint: `tokenizer.json` read with Hugging Face's `tokenizers` library.

Llama 4's tokenizer is a byte-level BPE of 200,000 tokens plus 2,048 special tokens (`<|begin_of_text|>` = 200000,
`<|eot|>` = 200008, …). Hugging Face checkpoints ship it as `tokenizer.json`; Meta's original `tokenizer.model`
(tiktoken ranks) is not read here. The interface matches the course tokenizer (`BPETokenizer`): `encode`, `decode`,
`special_ids`, `vocab_size`, so chat code runs with either.

Two details matter for chat:
* the tokenizer's post-processor would prepend <|begin_of_text|>, but the chat template already writes it:
  `encode` never adds special tokens (a doubled BOS is a classic bug);
* generation stops at any of <|eot|> (end of turn), <|eom|> (end of message: a tool call follows) and
  <|end_of_text|>: `stop_ids`.

`save_course_tokenizer` writes the course's own BPETokenizer in the same format (same ids), so a toy checkpoint
directory works with `minillama4 chat` exactly like a real one.
"""

from __future__ import annotations

import os
from pathlib import Path

STOP_TOKENS = ("<|eot|>", "<|eom|>", "<|end_of_text|>")
TOKENIZER_FILE = "tokenizer.json"


class HFTokenizer:
    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.special_ids = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        self.stop_ids = [self.special_ids[s] for s in STOP_TOKENS if s in self.special_ids]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HFTokenizer":
        """From a checkpoint directory (its tokenizer.json) or from the tokenizer.json file itself."""
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - a dependency of the package
            raise ImportError("reading tokenizer.json needs the `tokenizers` library: pip install tokenizers") from None
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            hint = " (Meta's original tokenizer.model is not read: use the Hugging Face checkpoint's tokenizer.json)" \
                if (path / "tokenizer.model").exists() else ""
            raise FileNotFoundError(f"{path}: no {TOKENIZER_FILE}{hint}")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:  # the library raises a bare Exception on malformed JSON
            raise ValueError(f"{file}: not a readable tokenizers file ({e})") from None
        return cls(tok)

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Text → token ids, adding nothing (no BOS). With allow_special, special-token names in the text become their
        ids; without, they are encoded as the plain text they are made of."""
        self.tok.encode_special_tokens = not allow_special
        try:
            return self.tok.encode(text, add_special_tokens=False).ids
        finally:
            self.tok.encode_special_tokens = False

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size


def load_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """The tokenizer of a checkpoint directory."""
    return HFTokenizer.load(path)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, which byte-level BPE vocabularies (Llama 4's too) are written in:
    printable bytes stand for themselves, the others are moved to unused code points from 256 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def course_tokenizer_json(tok) -> str:
    """The course's BPETokenizer written as a Hugging Face tokenizer.json with the same ids: special tokens first,
    then the 256 bytes, then the merges in the order they were learned (the BPE model applies the earliest-learned
    merge first, as the course tokenizer does). So a toy checkpoint can carry a tokenizer.json and be used exactly
    like a real one (`minillama4 chat --checkpoint DIR`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from .course.tokenizer import PRETOKENIZE

    b2u = _bytes_to_unicode()
    text = ["".join(b2u[b] for b in bs) for bs in tok.token_bytes]
    vocab = {text[i]: i for i in range(tok.first_byte, tok.vocab_size)}
    if len(vocab) != tok.vocab_size - tok.first_byte:
        raise ValueError("two tokens of the course tokenizer spell the same bytes: no tokenizer.json can hold both")
    merges = [(text[a], text[b]) for a, b in tok.merges]
    vocab.update({s: i for i, s in enumerate(tok.special_tokens)})  # ids 0 … n-1, marked special below
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence([  # the course's split (words, single digits, symbols, spaces), then bytes
        pre_tokenizers.Split(Regex(PRETOKENIZE.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in tok.special_tokens])
    if [hf.token_to_id(s) for s in tok.special_tokens] != list(range(tok.first_byte)):
        raise ValueError("special tokens did not get the course tokenizer's ids")
    return hf.to_str()


def save_course_tokenizer(tok, path: str | os.PathLike) -> Path:
    """Write `course_tokenizer_json(tok)` as path/tokenizer.json (path: a checkpoint directory)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / TOKENIZER_FILE).write_text(course_tokenizer_json(tok))
    return path / TOKENIZER_FILE
