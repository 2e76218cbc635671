"""Verifiable tasks (tasks.py) and the Llama 4 chat format (chat.py)."""

import random

import pytest

from minillama4.chat import (IGNORE_INDEX, decode_reply, encode_chat, encode_prompt, format_chat, sft_example,
                             stop_ids)
from minillama4.course.data import course_tokenizer
from minillama4.course.tasks import (KINDS, LEVELS, Task, eval_set, grade, is_held_out, make_task, reward, sample_tasks)

TOK = course_tokenizer()


# ------------------------------------------------------------------------------------------------------------ chat
def test_format_chat_matches_the_llama4_layout():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]
    want = ("<|begin_of_text|><|header_start|>system<|header_end|>\n\nBe brief.<|eot|>"
            "<|header_start|>user<|header_end|>\n\nWho are you?<|eot|><|header_start|>assistant<|header_end|>\n\n")
    assert format_chat(msgs) == want
    assert format_chat(msgs, add_generation_prompt=False) == want[:-len("<|header_start|>assistant<|header_end|>\n\n")]
    # the tool role is written as ipython, as in Meta's template
    assert "<|header_start|>ipython<|header_end|>" in format_chat([{"role": "tool", "content": "42"}])


@pytest.mark.parametrize("bad, what", [
    ("hello", "list"), ([{"role": "user"}], "'role' and 'content'"), ([{"role": "bot", "content": "x"}], "bot"),
    ([{"role": "user", "content": 3}], "string")])
def test_format_chat_rejects_bad_messages(bad, what):
    with pytest.raises(ValueError, match=what):
        format_chat(bad)


def test_token_level_chat_equals_tokenizing_the_text():
    msgs = [{"role": "user", "content": "Which is the largest: 3, 9?"}, {"role": "assistant", "content": "The answer is 9."}]
    ids, mask = encode_chat(TOK, msgs)
    assert ids == TOK.encode(format_chat(msgs, add_generation_prompt=False))
    assert encode_prompt(TOK, msgs[:1]) == TOK.encode(format_chat(msgs[:1]))
    assert ids[:len(encode_prompt(TOK, msgs[:1]))] == encode_prompt(TOK, msgs[:1])  # the prompt is a prefix
    # exactly the reply and its <|eot|> are assistant tokens
    reply = [i for i, m in zip(ids, mask) if m]
    assert TOK.decode(reply) == "The answer is 9.<|eot|>"
    assert ids.count(TOK.special_ids["<|begin_of_text|>"]) == 1


def test_sft_example_labels_only_the_assistant_tokens_shifted():
    msgs = [{"role": "user", "content": "Which is the smallest: 4, 7?"}, {"role": "assistant", "content": "4"}]
    x, y = sft_example(TOK, msgs)
    ids, mask = encode_chat(TOK, msgs)
    assert x.tolist() == ids[:-1] and y.shape == x.shape
    for t in range(len(y)):  # position t predicts token t + 1, labelled only when the assistant wrote it
        assert y[t].item() == (ids[t + 1] if mask[t + 1] else IGNORE_INDEX)
    assert (y != IGNORE_INDEX).sum().item() == sum(mask) == len(TOK.encode("4")) + 1
    with pytest.raises(ValueError, match="assistant"):
        sft_example(TOK, msgs[:1])


def test_decode_reply_stops_at_the_first_stop_token():
    eot = TOK.special_ids["<|eot|>"]
    ids = TOK.encode("The answer is 5.") + [eot] + TOK.encode("junk")
    assert decode_reply(TOK, ids) == ("The answer is 5.", True)
    assert decode_reply(TOK, TOK.encode("The answer")) == ("The answer", False)
    assert eot in stop_ids(TOK)


# ------------------------------------------------------------------------------------------------------------ tasks
def test_answers_are_right():
    rng = random.Random(0)
    for _ in range(200):
        t = make_task(rng.choice(KINDS), rng.choice(LEVELS), rng)
        xs = [int(v) for v in t.question.split(":")[1].rstrip("?").split(",")]
        assert int(t.answer) == (max(xs) if t.kind == "max" else min(xs))
        assert len(xs) == 2 ** t.level and all(0 <= x <= 9 for x in xs)


def test_held_out_questions_never_reach_training():
    train = sample_tasks(2000, seed=3)
    ev = eval_set(30)
    assert not any(is_held_out(t) for t in train) and all(is_held_out(t) for t in ev)
    assert not {t.question for t in train} & {t.question for t in ev}
    assert eval_set(30) == ev  # deterministic
    assert len(ev) == 30 * len(KINDS) * len(LEVELS)
    assert {(t.kind, t.level) for t in ev} == {(k, lv) for k in KINDS for lv in LEVELS}


def test_sampling_follows_the_level_weights_and_the_seed():
    a = sample_tasks(600, seed=1, weights=[0, 0, 1])
    assert {t.level for t in a} == {3}
    mixed = sample_tasks(600, seed=1, weights=[1, 1, 2])
    frac3 = sum(t.level == 3 for t in mixed) / len(mixed)
    assert 0.42 < frac3 < 0.58
    assert sample_tasks(50, seed=9) == sample_tasks(50, seed=9) != sample_tasks(50, seed=10)


@pytest.mark.parametrize("kwargs, what", [({"levels": [4]}, "level"), ({"kinds": ["mul"]}, "kind"),
                                          ({"split": "test"}, "split"), ({"weights": [1, 2]}, "weights"),
                                          ({"n": -1}, "n must")])
def test_sample_tasks_rejects_bad_arguments(kwargs, what):
    args = {"n": 4, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=what):
        sample_tasks(**args)


def test_grader_checks_answer_and_format_separately():
    t = Task("max", 1, "Which is the largest: 3, 12?", "12")
    assert grade("The answer is 12.", t) == grade("The answer is 12.", t, True)
    g = grade("The answer is 12.", t)
    assert g.correct and g.formatted and g.answer == "12"
    g = grade("12", t)
    assert g.correct and not g.formatted
    g = grade("The answer is 3.", t)
    assert not g.correct and g.formatted
    assert not grade("The answer is 12", t).formatted  # no full stop
    assert not grade("The answer is 12. Yes.", t).formatted
    assert not grade("The answer is 12.", t, finished=False).correct  # never ended its turn
    assert not grade("no number here", t).correct and grade("no number here", t).answer is None
    assert grade("3 or 12", t).correct  # the last integer counts
    assert reward("Answer: 12", t) == 1.0 and reward("Answer: 13", t) == 0.0
    with pytest.raises(ValueError, match="string"):
        grade(12, t)
