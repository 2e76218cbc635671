"""The course corpus, its tokenizer and the cached toy-model recipes."""

import json

import pytest
import torch

import minillama4
from minillama4.course import data, zoo
from minillama4.course.tokenizer import SPECIAL_TOKENS, BPETokenizer
from minillama4.train import TrainConfig


def test_tokenizer_round_trips_any_text_and_keeps_specials():
    tok = data.course_tokenizer()
    assert tok.vocab_size == data.VOCAB_SIZE == minillama4.Llama4Config.preset("toy").vocab_size
    for text in ["The \"for\" statement\n\n   for_stmt ::=", "347 * 12 = 4164", "def f(x):\n\treturn x", "naïve – 日本 🦙", ""]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("<|header_start|>user<|header_end|>\n\nhi<|eot|>")
    assert ids[0] == SPECIAL_TOKENS.index("<|header_start|>") and ids[-1] == SPECIAL_TOKENS.index("<|eot|>")
    assert tok.encode("<|eot|>", allow_special=False) != [SPECIAL_TOKENS.index("<|eot|>")]
    digits = tok.encode("12345")
    assert len(digits) == 5 and tok.decode(digits[:1]) == "1"  # one token per digit


def test_bpe_merges_the_most_frequent_pair_first():
    tok = BPETokenizer.train("ab ab ab cd", vocab_size=len(SPECIAL_TOKENS) + 256 + 2)
    first = len(SPECIAL_TOKENS)
    assert tok.merges[0] == (first + ord("a"), first + ord("b"))  # "ab" occurs 3 times
    assert tok.token_str(tok.vocab_size - 1) == " ab"  # then " " + "ab" (twice) beats " c", "cd" (once)
    assert tok.encode(" ab ab") == [tok.vocab_size - 1] * 2


def test_shipped_tokenizer_is_what_the_package_trains():
    shipped = json.loads(data.TOKENIZER_ASSET.read_text())
    assert [list(m) for m in data.train_course_tokenizer().merges] == shipped["merges"]


def test_splits_are_deterministic_disjoint_and_cover_all_domains():
    train, val = data.split_documents("train"), data.split_documents("val")
    assert len(train) + len(val) == len(data.documents()) and not set(train) & set(val)
    assert {d.domain for d in val} == set(data.DOMAINS)
    assert data.split_documents("val") == val
    with pytest.raises(ValueError, match="split"):
        data.split_documents("test")


def test_course_tokens_are_cached_and_reject_a_wrong_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLAMA4_CACHE", str(tmp_path))
    val = data.course_tokens("val")
    assert val.ids.shape == val.domain.shape and int(val.ids.max()) < data.VOCAB_SIZE
    assert int(val.ids[0]) == SPECIAL_TOKENS.index("<|begin_of_text|>")
    assert set(val.domain.unique().tolist()) == {0, 1, 2}
    assert len(list((tmp_path / "data").glob("val-*.npz"))) == 1
    assert torch.equal(data.course_tokens("val").ids, val.ids)  # from the cache
    with pytest.raises(ValueError, match="vocab_size=1000"):
        data.course_tokens("val", vocab_size=1000)


def test_zoo_trains_once_then_loads_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLAMA4_CACHE", str(tmp_path))
    cfg = minillama4.Llama4Config.preset("toy").replace(hidden_size=32, head_dim=8, intermediate_size=32,
                                                        num_hidden_layers=2)
    tiny = zoo.Recipe("tiny", "a test recipe", cfg, TrainConfig(steps=3, batch_size=2, seq_len=16, eval_every=3,
                                                                 eval_batches=1, warmup_steps=1))
    monkeypatch.setattr(zoo, "recipes", lambda profile=None, seed=0: {"tiny": tiny})
    calls = []
    real_train = zoo.train
    monkeypatch.setattr(zoo, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    m1, h1 = zoo.pretrained("tiny", profile="ci", verbose=False)
    m2, h2 = zoo.pretrained("tiny", profile="ci", verbose=False)
    assert calls == [1] and h1.val_loss == h2.val_loss and len(h1.train_loss) == 3
    ids = torch.randint(0, cfg.vocab_size, (1, 20))
    torch.testing.assert_close(m1(ids), m2(ids))
    with pytest.raises(ValueError, match="unknown toy model 'nope'"):
        zoo.pretrained("nope", profile="ci")
