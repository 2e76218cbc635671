"""The course corpus: real text that needs no download, plus generated arithmetic and code.

Three domains, so that experts have something to specialise on:

* docs: CPython's own documentation topics (`pydoc_data.topics`, PSF licence), a snapshot shipped in
  `assets/pydoc_topics.txt.gz` so every Python version sees the same text;
* math: generated sums, differences and products ("417 + 38 = 455"), exactly checkable;
* code: generated small Python functions.

Documents are split deterministically (every 10th document of each domain is validation), encoded with the course
BPE (`tokenizer.py`), each wrapped in <|begin_of_text|> … <|end_of_text|>, and cached in `cache_dir()`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .cachekey import cache_key
from .tokenizer import ASSET as TOKENIZER_ASSET
from .tokenizer import BPETokenizer

ASSETS = Path(__file__).parent / "assets"
DOMAINS = ("docs", "math", "code")
VOCAB_SIZE = 512  # the course tokenizer's size (= Llama4Config.preset("toy").vocab_size)


def cache_dir() -> Path:
    """Where trained toy models and encoded data live: $MINILLAMA4_CACHE, or ~/.cache/minillama4."""
    d = Path(os.environ.get("MINILLAMA4_CACHE") or Path.home() / ".cache" / "minillama4")
    d.mkdir(parents=True, exist_ok=True)
    return d


def display_path(path: Path) -> str:
    """`path` as printed to the learner: the home folder written as ~, so the message reads the same everywhere."""
    home = Path.home()
    return "~/" + path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)


@dataclass(frozen=True)
class Document:
    domain: str  # one of DOMAINS
    text: str


def _docs() -> list[Document]:
    text = gzip.decompress((ASSETS / "pydoc_topics.txt.gz").read_bytes()).decode("utf-8")
    return [Document("docs", t.strip()) for t in text.split("\n\x0c\n") if t.strip()]


def _math(n_docs: int, lines: int = 40, seed: int = 1) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        out = []
        for _ in range(lines):
            op = rng.choice("+-*")
            a = rng.randint(0, 999)
            b = rng.randint(0, 99 if op == "*" else 999)
            c = a + b if op == "+" else a - b if op == "-" else a * b
            out.append(f"{a} {op} {b} = {c}")
        docs.append(Document("math", "\n".join(out)))
    return docs


_NAMES = ["total", "count", "value", "items", "result", "index", "size", "data", "key", "name", "left", "right"]


def _code(n_docs: int, funcs: int = 6, seed: int = 2) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        out = []
        for _ in range(funcs):
            fn, a, b = rng.sample(_NAMES, 3)
            kind = rng.randrange(4)
            if kind == 0:
                body = f"    return {a} {rng.choice('+-*')} {b}"
            elif kind == 1:
                body = f"    if {a} > {b}:\n        return {a}\n    return {b}"
            elif kind == 2:
                body = f"    {fn} = 0\n    for x in {a}:\n        {fn} += x * {b}\n    return {fn}"
            else:
                body = f"    return [x for x in {a} if x != {b}]"
            out.append(f"def get_{fn}({a}, {b}):\n{body}\n")
        docs.append(Document("code", "\n".join(out)))
    return docs


@lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
    """Every document of the corpus, in a fixed order: docs, then math, then code."""
    docs = _docs()
    return tuple(docs + _math(len(docs) * 2) + _code(len(docs) * 2))


def split_documents(split: str) -> list[Document]:
    """'train' or 'val': every 10th document of each domain is validation."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    out, seen = [], {d: 0 for d in DOMAINS}
    for doc in documents():
        is_val = seen[doc.domain] % 10 == 9
        seen[doc.domain] += 1
        if is_val == (split == "val"):
            out.append(doc)
    return out


@lru_cache(maxsize=1)
def course_tokenizer() -> BPETokenizer:
    """The course's 512-token BPE (trained on the training split by `train_course_tokenizer`, shipped as JSON)."""
    return BPETokenizer.load(TOKENIZER_ASSET)


def train_course_tokenizer() -> BPETokenizer:
    """Re-train the shipped tokenizer from the training split (what produced assets/tokenizer.json)."""
    return BPETokenizer.train("\n".join(d.text for d in split_documents("train")), VOCAB_SIZE)


@dataclass
class TokenStream:
    ids: torch.Tensor  # [N] int64 token ids, documents back to back
    domain: torch.Tensor  # [N] int64 index into DOMAINS of the document each token came from


def course_tokens(split: str, vocab_size: int = VOCAB_SIZE) -> TokenStream:
    """The encoded split, cached on disk (encoding takes a few seconds the first time)."""
    tok = course_tokenizer()
    if vocab_size != tok.vocab_size:
        raise ValueError(f"the course corpus is encoded with a {tok.vocab_size}-token vocabulary; "
                         f"a model with vocab_size={vocab_size} cannot read it")
    docs = split_documents(split)
    text = hashlib.sha256(TOKENIZER_ASSET.read_bytes() + "".join(d.text for d in docs).encode()).hexdigest()
    key = cache_key({"split": split, "text": text}, __name__, runtime_dependent=False)  # + the encoding code
    path = cache_dir() / "data" / f"{split}-{key}.npz"
    if path.is_file():
        z = np.load(path)
        return TokenStream(torch.from_numpy(z["ids"]), torch.from_numpy(z["domain"]))
    bos, eos = tok.special_ids["<|begin_of_text|>"], tok.special_ids["<|end_of_text|>"]
    ids, dom = [], []
    for d in docs:
        t = [bos] + tok.encode(d.text, allow_special=False) + [eos]
        ids.extend(t)
        dom.extend([DOMAINS.index(d.domain)] * len(t))
    ids_np, dom_np = np.array(ids, dtype=np.int64), np.array(dom, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids_np, domain=dom_np)
    tmp.replace(path)
    return TokenStream(torch.from_numpy(ids_np), torch.from_numpy(dom_np))
