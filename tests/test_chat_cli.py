"""The checkpoint's tokenizer.json, and `minillama4 chat` / `generate --prompt` on a transformers-written checkpoint."""

import io
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import minillama4
from minillama4.chat import format_chat
from minillama4.cli import main, stream_generate
from minillama4.hf_tokenizer import HFTokenizer, load_tokenizer
from conftest import write_hf_checkpoint

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<|finetune_right_pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>",
            "<|eom|>", "<|eot|>", "<|python_start|>"]  # ids 0 … 7: pad 0, bos 1, eos 2 as in the tiny config
TEXT = ("The cat sat on the mat. The dog sat on the log. Who are you? I am a small model. "
        "Hello there, how are you today? 12 + 7 = 19. ") * 20
VOCAB = 300


def write_tokenizer(path):
    """A byte-level BPE like Llama 4's (256 bytes + merges + special tokens), built locally, with the post-processor
    that prepends <|begin_of_text|> as Hugging Face's Llama 4 tokenizer.json does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 1)])
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = write_hf_checkpoint(tmp_path_factory.mktemp("chat") / "scout", vocab_size=VOCAB)
    return write_tokenizer(path)


def test_tokenizer_json_ids_specials_and_no_added_bos(ckpt):
    tok = load_tokenizer(ckpt)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == VOCAB
    assert [tok.special_ids[s] for s in SPECIALS] == list(range(8))
    assert tok.stop_ids == [6, 5, 2]  # <|eot|>, <|eom|>, <|end_of_text|>
    prompt = format_chat([{"role": "user", "content": "Who are you?"}])
    ids = tok.encode(prompt)
    assert ids[:2] == [1, 3] and ids.count(1) == 1  # the template's BOS only: the post-processor's is not added
    assert ids[-2:] != [4, 4] and 6 in ids and tok.decode(ids) == prompt
    plain = tok.encode("<|eot|>", allow_special=False)  # a special's name as plain text is not the special
    assert 6 not in plain and tok.decode(plain) == "<|eot|>"
    assert tok.encode("<|eot|>") == [6]


def test_missing_or_broken_tokenizer_is_a_clear_error(tmp_path, scout_ckpt, capsys):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_text("")
    with pytest.raises(FileNotFoundError, match="tokenizer.model is not read"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable tokenizers file"):
        load_tokenizer(tmp_path)
    assert main(["chat", "--checkpoint", str(scout_ckpt), "--prompt", "hi"]) == 1
    assert "no tokenizer.json" in capsys.readouterr().err


def greedy_reply(model, tok, messages, n):
    ids = torch.tensor([tok.encode(format_chat(messages))])
    out = model.generate(ids, n, eos_token_id=sorted(set(tok.stop_ids) | {2}))[0, ids.shape[1]:].tolist()
    return [t for t in out[:next((i for i, t in enumerate(out) if t in (2, 5, 6)), len(out))]]


def test_chat_streams_the_greedy_reply(ckpt, monkeypatch):
    model, tok = minillama4.from_pretrained(ckpt), load_tokenizer(ckpt)
    want = greedy_reply(model, tok, [{"role": "user", "content": "Hello there"}], 12)
    assert len(want) >= 3  # the random model does not stop at once: there is something to stream

    class Recorder(io.StringIO):
        writes = 0

        def write(self, s):
            Recorder.writes += bool(s)
            return super().write(s)

        def isatty(self):
            return False

    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["chat", "--checkpoint", str(ckpt), "--prompt", "Hello there", "--temperature", "0",
                 "--max-new-tokens", "12"]) == 0
    assert out.getvalue() == tok.decode(want) + "\n"
    assert Recorder.writes >= 3  # written piece by piece as the tokens came, not once at the end
    gen = stream_generate(model, tok.encode(format_chat([{"role": "user", "content": "Hello there"}])), 12,
                          stop_ids={2, 5, 6})
    assert next(gen) == want[0] and next(gen) == want[1]  # a generator: tokens arrive one at a time


@pytest.mark.parametrize("stop", ["<|eot|>", "<|eom|>", "<|end_of_text|>"])
def test_chat_stops_at_each_stop_token(ckpt, tmp_path, stop, capsys):
    """Make the model emit `stop` as its 4th token: swap that step's greedy token's lm_head row with the stop
    token's row. Steps before are unchanged (neither token was their argmax), so the reply is exactly 3 tokens."""
    import shutil

    tok = load_tokenizer(ckpt)
    messages = [{"role": "user", "content": "Hello there"}]
    free = greedy_reply(minillama4.from_pretrained(ckpt), tok, messages, 12)
    k = next(i for i in range(3, len(free)) if free[i] not in free[:i])
    path = tmp_path / "swapped"
    shutil.copytree(ckpt, path)
    sd = load_file(str(path / "model.safetensors"))
    sid, a = tok.special_ids[stop], free[k]
    sd["lm_head.weight"][[a, sid]] = sd["lm_head.weight"][[sid, a]].clone()
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    assert main(["chat", "--checkpoint", str(path), "--prompt", "Hello there", "--temperature", "0",
                 "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == tok.decode(free[:k]) + "\n"


def test_chat_reads_turns_from_stdin_and_keeps_the_conversation(ckpt, monkeypatch, capsys):
    model, tok = minillama4.from_pretrained(ckpt), load_tokenizer(ckpt)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\n\nWho are you?\n/exit\nnever read\n"))
    assert main(["chat", "--checkpoint", str(ckpt), "--temperature", "0", "--max-new-tokens", "6",
                 "--system", "Be brief."]) == 0
    lines = capsys.readouterr().out.split("\n")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    first = tok.decode(greedy_reply(model, tok, msgs, 6))
    msgs += [{"role": "assistant", "content": first}, {"role": "user", "content": "Who are you?"}]
    second = tok.decode(greedy_reply(model, tok, msgs, 6))
    assert "\n".join(lines[:-1]) == first + "\n" + second  # two replies, the second one saw the first


def test_chat_with_compile_gives_the_eager_replies(ckpt, monkeypatch, capsys, quick_compile):
    """chat --compile: two turns, each streamed through a compiled decode step, equal the eager replies."""
    args = ["chat", "--checkpoint", str(ckpt), "--temperature", "0", "--max-new-tokens", "6", "--prompt", "Hello there",
            "--prompt", "Who are you?"]
    assert main(args) == 0
    want = capsys.readouterr().out
    assert main(args + ["--compile"]) == 0
    assert capsys.readouterr().out == want and len(want.strip()) > 0
    assert len(quick_compile) == 2 and all(c["fullgraph"] for c in quick_compile)  # one decode step per reply


def test_generate_with_text_and_clear_errors(ckpt, tmp_path, capsys):
    model, tok = minillama4.from_pretrained(ckpt), load_tokenizer(ckpt)
    assert main(["generate", str(ckpt), "--prompt", "The cat", "--max-new-tokens", "5"]) == 0
    prompt = tok.encode("The cat")
    out = model.generate(torch.tensor([prompt]), 5, eos_token_id=[2, 5, 6])[0, len(prompt):].tolist()
    want = out[:next((i for i, t in enumerate(out) if t in (2, 5, 6)), len(out))]
    assert capsys.readouterr().out == tok.decode(want) + "\n"
    # a conversation longer than the model's context
    assert main(["chat", "--checkpoint", str(ckpt), "--prompt", "cat " * 600, "--max-new-tokens", "4"]) == 1
    assert "exceeds the model's context of 512 tokens" in capsys.readouterr().err
    # a tokenizer that does not belong to the model
    small = write_hf_checkpoint(tmp_path / "small", vocab_size=160)
    write_tokenizer(small)
    assert main(["chat", "--checkpoint", str(small), "--prompt", "hi"]) == 1
    assert "tokenizer.json has 300 tokens but the model's vocab_size is 160" in capsys.readouterr().err


def test_the_course_tokenizer_as_tokenizer_json_gives_the_same_ids_and_chats(tmp_path, capsys):
    """A toy checkpoint can carry its tokenizer as tokenizer.json and be used like a real one."""
    import itertools

    from minillama4.course.data import documents
    from minillama4.hf_tokenizer import save_course_tokenizer
    from minillama4.course.tokenizer import BPETokenizer

    course = BPETokenizer.load()
    save_course_tokenizer(course, tmp_path / "toy")
    tok = load_tokenizer(tmp_path / "toy")
    assert tok.vocab_size == course.vocab_size and tok.stop_ids == [6, 5, 2]
    text = "".join(d.text for d in itertools.islice(documents(), 60))
    text += format_chat([{"role": "user", "content": "What is 12 + 7?\tzip()  x=1;\n\n\n é日本"}])
    ids = course.encode(text)
    assert tok.encode(text) == ids and tok.decode(ids) == text and len(ids) > 10_000
    torch.manual_seed(0)
    model = minillama4.Llama4(minillama4.Llama4Config.preset("toy"))
    minillama4.save_pretrained(model, tmp_path / "toy")
    assert main(["chat", "--checkpoint", str(tmp_path / "toy"), "--prompt", "What is 12 + 7?", "--temperature", "0",
                 "--max-new-tokens", "8"]) == 0
    want = greedy_reply(model, tok, [{"role": "user", "content": "What is 12 + 7?"}], 8)
    assert capsys.readouterr().out == course.decode(want) + "\n"
