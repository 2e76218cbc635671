"""The grading machinery: exercise registry, running one exercise safely, check(), grade()."""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

# chapter number → module stem of its exercise file in exercises/ and solutions/
CHAPTERS = {
    1: "ch01_swiglu_experts",
    2: "ch02_router_scatter_add",
    3: "ch03_moe_layer",
    4: "ch04_attention_irope",
    5: "ch05_decoder_generation",
    6: "ch06_early_fusion",
    7: "ch07_distillation",
    8: "ch08_sft",
    9: "ch09_online_rl",
    10: "ch10_dpo",
    11: "ch11_scout_on_h100",
}
TOLERANCE = dict(atol=1e-5, rtol=1e-4)  # float32 comparisons in every graded case
TIMEOUT_S = 30.0  # per exercise: an endless loop fails instead of hanging the grader


@dataclass
class Case:
    args: tuple  # positional arguments for the learner's function
    expected: Any  # what the package computes for them (tensor, tuple of tensors, number, …)
    kwargs: dict = field(default_factory=dict)


@dataclass
class Exercise:
    name: str  # what check() is called with, e.g. "swiglu"
    chapter: int
    function: str  # the function's name in exercises/chNN_*.py
    cases: Callable[[], list[Case]]  # builds seeded cases (called once per check)
    hint: str  # shown when the answer is wrong
    exact: bool = False  # integer outputs (indices, masks, tokens) must match exactly
    # custom verdict instead of comparing outputs: verify(fn) -> (ok, max_err, message)
    verify: Callable[[Callable], tuple[bool, float, str]] | None = None


@dataclass
class Result:
    name: str
    status: str  # "pass" | "todo" (NotImplementedError) | "fail" (wrong answer) | "error" (crash or timeout)
    max_err: float = float("nan")
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def _ipython_display_(self) -> None:
        """check() already printed the verdict: a notebook cell ending in check(...) shows it once, not twice."""

    def line(self) -> str:
        icon = {"pass": "✅", "todo": "⏳", "fail": "❌", "error": "❌"}[self.status]
        text = {"pass": "passed", "todo": "not implemented yet"}.get(self.status, self.message)
        return f"{icon} {self.name}: {text}"


def seeded(seed: int) -> torch.Generator:
    """A CPU generator for one case's inputs: each case draws from its own seed, so their order never matters."""
    return torch.Generator().manual_seed(seed)


_REGISTRY: dict[str, Exercise] = {}


def register(ex: Exercise) -> Exercise:
    if ex.name in _REGISTRY:
        raise ValueError(f"exercise {ex.name!r} registered twice")
    _REGISTRY[ex.name] = ex
    return ex


def _load_specs() -> None:
    for n in CHAPTERS:
        name = f"minillama4.course.grading.ch{n:02d}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def exercises(chapter: int | None = None) -> list[Exercise]:
    """All registered exercises (of one chapter), in chapter order."""
    _load_specs()
    return [e for e in _REGISTRY.values() if chapter is None or e.chapter == chapter]


def _get(name: str) -> Exercise:
    _load_specs()
    if name not in _REGISTRY:
        raise KeyError(f"no exercise named {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# ------------------------------------------------------------------------------------------ finding the learner's code
def project_root() -> Path:
    """The folder holding exercises/ and solutions/: $MINILLAMA4_ROOT, the checkout the package is installed from,
    or the first parent of the current directory that has an exercises/ folder."""
    env = os.environ.get("MINILLAMA4_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[3]
    if (here / "exercises").is_dir():
        return here
    for d in [Path.cwd(), *Path.cwd().parents]:
        if (d / "exercises").is_dir():
            return d
    raise FileNotFoundError("cannot find the course's exercises/ folder; set MINILLAMA4_ROOT to the repository root")


def load_impl(chapter: int, impl: str | None = None):
    """Import (freshly, so edits are picked up) the chapter's module from exercises/ (default, or
    $MINILLAMA4_IMPL) or solutions/."""
    impl = impl or os.environ.get("MINILLAMA4_IMPL", "exercises")
    if impl not in ("exercises", "solutions"):
        raise ValueError(f"impl must be 'exercises' or 'solutions', got {impl!r}")
    if chapter not in CHAPTERS:
        raise ValueError(f"no graded exercises for chapter {chapter}; chapters: {sorted(CHAPTERS)}")
    path = project_root() / impl / f"{CHAPTERS[chapter]}.py"
    spec = importlib.util.spec_from_file_location(f"_{impl}_{CHAPTERS[chapter]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ running one exercise
@contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError in the main thread after `seconds` (Unix); elsewhere no limit is enforced here
    (the grader's subprocess and pytest-timeout still bound it)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"did not finish within {seconds:.0f} s (an endless loop?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _flatten(x) -> list:
    if isinstance(x, (tuple, list)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def compare(got, expected, exact: bool) -> tuple[bool, float, str]:
    """(ok, max abs error, what differs) between the learner's output and the expected one."""
    g, e = _flatten(got), _flatten(expected)
    if len(g) != len(e):
        return False, float("inf"), f"returned {len(g)} value(s), expected {len(e)}"
    worst = 0.0
    for i, (a, b) in enumerate(zip(g, e)):
        what = f"output {i}: " if len(e) > 1 else ""
        if isinstance(b, torch.Tensor):
            if not isinstance(a, torch.Tensor):
                return False, float("inf"), f"{what}returned {type(a).__name__}, expected a tensor"
            if a.shape != b.shape:
                return False, float("inf"), f"{what}shape {tuple(a.shape)}, expected {tuple(b.shape)}"
            if exact or not b.is_floating_point():
                if not torch.equal(a.to(b.dtype), b):
                    n = int((a.to(b.dtype) != b).sum())
                    return False, float("inf"), f"{what}{n} of {b.numel()} entries differ"
                continue
            err = (a.detach().double() - b.double()).abs()
            worst = max(worst, float(err.max()) if err.numel() else 0.0)
            if not torch.allclose(a.detach().to(b.dtype), b, **TOLERANCE):
                return False, worst, f"{what}max error {worst:.3g}"
        elif isinstance(b, float):
            if not isinstance(a, (int, float, torch.Tensor)):
                return False, float("inf"), f"{what}returned {type(a).__name__}, expected a number"
            err = abs(float(a) - b)
            worst = max(worst, err)
            if err > TOLERANCE["atol"] + TOLERANCE["rtol"] * abs(b):
                return False, worst, f"{what}got {float(a):.6g}, expected {b:.6g}"
        elif a != b:
            return False, float("inf"), f"{what}got {a!r}, expected {b!r}"
    return True, worst, ""


def run_exercise(name: str, fn: Callable, timeout: float = TIMEOUT_S) -> Result:
    """Run every case of exercise `name` on fn. Never raises for the learner's mistakes: they become the Result."""
    ex = _get(name)
    try:
        with _time_limit(timeout):
            if ex.verify is not None:
                ok, err, msg = ex.verify(fn)
                if not ok:
                    return Result(name, "fail", err, f"{msg} — hint: {ex.hint}")
                return Result(name, "pass", err)
            worst = 0.0
            cases = ex.cases()
            for i, case in enumerate(cases):
                got = fn(*case.args, **case.kwargs)
                ok, err, msg = compare(got, case.expected, ex.exact)
                worst = max(worst, err)
                if not ok:
                    return Result(name, "fail", err, f"case {i + 1}/{len(cases)}: {msg} — hint: {ex.hint}")
            return Result(name, "pass", worst)
    except NotImplementedError:
        return Result(name, "todo")
    except Exception as exc:  # the learner's code crashed (or timed out): say how, never hang or hide it
        return Result(name, "error", float("nan"), f"{type(exc).__name__}: {exc} — hint: {ex.hint}")


def check(name: str, fn: Callable) -> Result:
    """Notebook feedback for one exercise: prints ✅ / ⏳ / ❌ (with the max error and a hint), returns the Result."""
    result = run_exercise(name, fn)
    print(result.line())
    return result


# ------------------------------------------------------------------------------------------ the score table
def _run_isolated(name: str, chapter: int, function: str, impl: str, timeout: float) -> Result:
    """Run one exercise in a fresh Python process, so a crash or a hang cannot take the grader with it."""
    code = ("import sys, json; from minillama4.course.grading import load_impl, run_exercise; "
            f"r = run_exercise({name!r}, getattr(load_impl({chapter}, {impl!r}), {function!r})); "
            "print('\\nRESULT ' + json.dumps([r.status, r.max_err, r.message]))")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 30,
                           env={**os.environ, "MINILLAMA4_ROOT": str(project_root())})
    except subprocess.TimeoutExpired:
        return Result(name, "error", message=f"did not finish within {timeout + 30:.0f} s")
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            import json
            status, err, msg = json.loads(line[7:])
            return Result(name, status, float("nan") if err is None else err, msg)
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return Result(name, "error", message=f"crashed: {tail}")


def grade(chapter: int | None = None, impl: str = "exercises", timeout: float = TIMEOUT_S,
          out=print) -> list[Result]:
    """Grade every exercise (of one chapter) in isolated processes and print a score table."""
    results = []
    chapters = [chapter] if chapter is not None else sorted(CHAPTERS)
    for ch in chapters:
        exs = exercises(ch)
        if not exs:
            continue
        out(f"Chapter {ch:02d} ({CHAPTERS[ch]}, {impl}/)")
        t0 = time.perf_counter()
        for ex in exs:
            r = _run_isolated(ex.name, ch, ex.function, impl, timeout)
            results.append(r)
            out("  " + r.line())
        score = sum(r.passed for r in results if _get(r.name).chapter == ch)
        out(f"  score: {score}/{len(exs)}  ({time.perf_counter() - t0:.0f} s)")
    if len(chapters) > 1:
        out(f"Total: {sum(r.passed for r in results)}/{len(results)}")
    return results
