"""Questions with answers a program can check, graded by difficulty: the data of post-training (chapters 08–10).

Two skills, three levels each, so that batches can mix capabilities and a curriculum can move toward harder prompts:

    max   "Which is the largest: 7, 5?"     level 1: two numbers   level 2: four numbers   level 3: eight numbers
    min   "Which is the smallest: 7, 5?"    the same levels

Numbers are digits 0-9. The answer is drawn first, uniformly, then the other numbers below it (max) or above it (min),
repeats allowed, and the answer goes to a random position: no answer is more likely than another, so a model cannot
score by always saying 9, and every extra number is one more distractor to compare against.

Both are rules, not facts: a held-out question can be answered by a model that learned the rule, never by memory.
(Multi-digit addition would be the classic choice, but a 2M-parameter model does not learn it within a CPU budget of
minutes; choosing among the numbers it is shown is within reach, and harder the more numbers there are.)

A task is a user question and its exact answer. The reply we want is one sentence, `The answer is 12.`, then <|eot|>.
The grader checks two things separately:

* correct:   the reply finished (the model wrote <|eot|>) and the last integer in it equals the answer;
* formatted: the reply is exactly `The answer is N.` (N any integer) and finished.

So "12" is correct but not formatted, and "The answer is 13." is formatted but not correct. RL rewards correctness;
DPO (chapter 10) then targets the format.

Held-out evaluation: every question is assigned to the held-out set or the training pool by a hash of its text
(1 in 5 held out), so no held-out question is ever trained on, and `eval_set` is the same list on every machine.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

KINDS = ("max", "min")
LEVELS = (1, 2, 3)
ANSWER_TEMPLATE = "The answer is {}."
FORMAT_RE = re.compile(r"The answer is (-?\d+)\.")
INT_RE = re.compile(r"-?\d+")
HELD_OUT_EVERY = 5  # one question in HELD_OUT_EVERY (by hash) is held out for evaluation


@dataclass(frozen=True)
class Task:
    kind: str  # one of KINDS
    level: int  # difficulty, one of LEVELS
    question: str  # what the user asks
    answer: str  # the exact answer, an integer written in decimal

    def messages(self) -> list[dict]:
        """The conversation that asks the question (what the model is prompted with)."""
        return [{"role": "user", "content": self.question}]

    def reply(self) -> str:
        """The ideal assistant reply."""
        return ANSWER_TEMPLATE.format(self.answer)


def _operands(kind: str, level: int, rng: random.Random) -> tuple[list[int], int]:
    answer = rng.randint(0, 9)
    xs = [rng.randint(0, answer) if kind == "max" else rng.randint(answer, 9) for _ in range(2 ** level - 1)]
    xs.insert(rng.randint(0, len(xs)), answer)
    return xs, answer


def make_task(kind: str, level: int, rng: random.Random) -> Task:
    """One random task of a given skill and difficulty."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; kinds are {', '.join(KINDS)}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    xs, answer = _operands(kind, level, rng)
    listed = ", ".join(map(str, xs))
    word = "largest" if kind == "max" else "smallest"
    return Task(kind, level, f"Which is the {word}: {listed}?", str(answer))


def is_held_out(task: Task) -> bool:
    """True for the questions reserved for evaluation (a fixed hash of the question text)."""
    digest = hashlib.sha256(task.question.encode()).digest()
    return digest[0] % HELD_OUT_EVERY == 0


def sample_tasks(n: int, seed: int, levels=LEVELS, kinds=KINDS, weights=None, split: str = "train") -> list[Task]:
    """n tasks from the training pool (split='train') or the held-out pool (split='eval'), mixed over kinds and
    levels (uniformly, or with weights over `levels`). Deterministic given the seed."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    levels, kinds = list(levels), list(kinds)
    for lv in levels:
        if lv not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {lv!r}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown task kind {k!r}; kinds are {', '.join(KINDS)}")
    if weights is not None and (len(weights) != len(levels) or min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"weights must be {len(levels)} non-negative numbers, not all 0, got {weights!r}")
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        level = rng.choices(levels, weights=weights)[0]
        task = make_task(rng.choice(kinds), level, rng)
        if is_held_out(task) == (split == "eval"):
            out.append(task)
    return out


def eval_set(per_level: int = 50, seed: int = 1234) -> list[Task]:
    """The held-out evaluation set: per_level tasks of each kind at each level, from the held-out pool only."""
    out = []
    for kind in KINDS:
        for level in LEVELS:
            out += sample_tasks(per_level, seed + 10 * level + KINDS.index(kind), levels=[level], kinds=[kind],
                                split="eval")
    return out


@dataclass(frozen=True)
class Grade:
    correct: bool  # finished, and the last integer in the reply equals the answer
    formatted: bool  # finished, and the reply is exactly "The answer is N."
    answer: str | None  # the integer the grader read from the reply (None if there is none)


def grade(reply: str, task: Task, finished: bool = True) -> Grade:
    """Check a reply (the text before the stop token) against a task. `finished` says whether the model ended
    its turn (<|eot|>); a reply that runs on is neither correct nor formatted."""
    if not isinstance(reply, str):
        raise ValueError(f"reply must be a string, got {type(reply).__name__}")
    ints = INT_RE.findall(reply)
    answer = ints[-1] if ints else None
    correct = finished and answer is not None and int(answer) == int(task.answer)
    formatted = finished and FORMAT_RE.fullmatch(reply) is not None
    return Grade(correct, formatted, answer)


def reward(reply: str, task: Task, finished: bool = True) -> float:
    """The verifiable reward of RL: 1.0 for a correct answer, else 0.0."""
    return float(grade(reply, task, finished).correct)
