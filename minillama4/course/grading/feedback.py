"""What the learner calls: check() in a notebook, hint() and solution() on request, grade() for a score.

    check("swiglu")      # grades exercises/ch01_*.py as it is on disk now: ✅ / ⏳ / ❌ with a diagnosis
    hint("swiglu")       # first a nudge, then the recipe
    solution("swiglu")   # the reference code from solutions/ (you choose to look)
    grade(1)             # every exercise of chapter 01; grade() is the progress table of all chapters
"""

from __future__ import annotations

import ast
import os
import pickle
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .core import CHAPTERS, Case, Exercise, Result, exercises, get, impl_file, project_root
from .sandbox import MEMORY_GB, PRINT_LIMIT, TIMEOUT_S, decode, encode, plain_loads, worker


# ------------------------------------------------------------------------------------------ running one exercise
def _rel(path) -> str:
    """A path as the learner knows it: relative to the checkout's root."""
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except (ValueError, FileNotFoundError):
        return str(path)


def _job(ex: Exercise, cases: list[Case], path: Path, function: str, impl: str, root: Path, timeout: float) -> dict:
    return {"path": str(path), "function": function, "timeout": timeout, "memory_gb": MEMORY_GB,
            "probe": (ex.probe.__module__, ex.probe.__qualname__) if ex.probe else None,
            "cases": pickle.dumps([(c.args, c.kwargs) for c in cases], protocol=pickle.HIGHEST_PROTOCOL),
            "forbidden": str(root / "solutions") + os.sep if impl == "exercises" else None}


def run(ex: Exercise | str, impl: str = "exercises", root: Path | None = None, path: Path | None = None,
        function: str | None = None, timeout: float = TIMEOUT_S) -> Result:
    """Grade one exercise in the worker: the learner's file (or the given path and function) on every case."""
    ex = get(ex) if isinstance(ex, str) else ex
    root = root or project_root()
    path = Path(path or impl_file(ex.chapter, impl, root))
    w = worker()
    if w.proc is None or w.proc.poll() is not None:
        w.start()  # the worker imports torch while this process builds the cases
    cases = _build_cases(ex)
    reply = w.run(_job(ex, cases, path, function or ex.function, impl, root, timeout))
    return verdict(ex, cases, reply, path, function or ex.function, timeout)


@contextmanager
def _one_thread():
    """Grading works on tiny tensors, where a thread pool only adds waiting (on a busy machine, a lot of it): the
    cases, the expected values and the diagnoses are computed on one thread; the caller's thread count is restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build_cases(ex: Exercise) -> list[Case]:
    with _one_thread():
        return ex.cases()


def _frames(reply: dict) -> list:
    frames = []
    for raw in reply["frames"]:
        try:
            frames.append(plain_loads(raw))
        except Exception:
            frames.append(("garbled",))
    return frames


SIGNALS = {signal.SIGKILL: "SIGKILL: out of memory, or killed from outside?", signal.SIGSEGV: "SIGSEGV: a crash",
           signal.SIGXFSZ: "SIGXFSZ: it printed too much", signal.SIGABRT: "SIGABRT: an abort"}


def verdict(ex: Exercise, cases: list[Case], reply: dict, path: Path, function: str, timeout: float) -> Result:
    """Turn the worker's frames into a verdict: compare each case's output, diagnose the first wrong one."""
    frames = _frames(reply)
    where = f"{_rel(path)} ({function})"
    outputs, end, loaded = {}, None, False
    for f in frames:
        kind = f[0]
        if kind == "loaded":
            where, loaded = f"{_rel(f[1])}:{f[2]}", True
        elif kind == "case":
            outputs[f[1]] = decode(f[2])
        elif kind == "forbidden":
            read = re.sub(r"__pycache__/(\w+)\.[\w-]+\.pyc$", r"\1.py", _rel(f[1]))  # the module, not its bytecode
            return Result(ex.name, "fail", message=f"your code reads {read}, the reference solution: only your own "
                                                   "code is graded", where=where)
        elif end is None:
            end = f
    base = dict(where=where, output=reply.get("printed", ""))
    n, worst = len(cases), 0.0
    for i, case in enumerate(cases):
        label = f"case {i + 1} of {n}"
        if i in outputs:
            got = outputs[i]
            ok, err, msg = ex.judge(got, case.expected)
            worst = max(worst, err) if err == err else worst
            if not ok:
                with _one_thread():
                    diagnosis = ex.diagnose(case, got)
                if diagnosis:
                    return Result(ex.name, "fail", err, f"{label}: {diagnosis}", detail=msg, mistake=diagnosis,
                                  **base)
                return Result(ex.name, "fail", err, f"{label}: {msg}", **base)
            continue
        return _ending(ex, end, reply, label, timeout, base, loaded)
    if end is not None and end[0] != "done":
        return _ending(ex, end, reply, "after the last case", timeout, base, loaded)
    return Result(ex.name, "pass", worst, **base)


def _ending(ex, end, reply, label, timeout, base, loaded: bool) -> Result:
    """Why the learner's code stopped before returning an output for this case."""
    name = ex.name
    loading = end is not None and len(end) > 1 and end[1] == -1
    at = "while loading your file" if loading else label
    if reply.get("timed_out"):
        what = label if loaded else "loading your file"
        return Result(name, "error", message=f"{what}: did not finish within {timeout:g} s (an endless loop?)", **base)
    if reply.get("too_big"):
        return Result(name, "error", message=f"{label}: returned more than 256 MB of output", **base)
    if end is None:
        sig = reply.get("signal")
        if sig:
            why = SIGNALS.get(sig, signal.Signals(sig).name)
            return Result(name, "error", message=f"{label}: your code was killed by signal {sig} ({why})", **base)
        return Result(name, "error", message=f"{label}: your code ended the process (exit status {reply.get('exit')},"
                                             " os._exit?) before returning", **base)
    kind = end[0]
    if kind == "todo":
        callee = end[2] if len(end) > 2 else ""
        if callee:  # the graded function is written, but calls another stub of the file
            return Result(name, "todo", message=f"it calls {callee}(), which still raises NotImplementedError: write "
                                                 f"{callee} first", **base)
        return Result(name, "todo", **base)
    if kind == "missing":
        return Result(name, "error", message=f"your file has no function named {ex.function!r} (renamed or deleted?)",
                      **base)
    if kind == "exit":
        return Result(name, "error", message=f"{at}: your code called sys.exit({end[2]}) / exit()",
                      detail=_lines(end[3]), **base)
    if kind in ("raised", "memory"):
        _, i, typ, msg, frames = end
        text = f"{at}: {typ}: {msg}"
        if kind == "memory":
            text = f"{at}: ran out of memory (the grader allows {MEMORY_GB:g} GB more than it needs itself): {msg}"
            return Result(name, "error", message=text, detail=_lines(frames), **base)
        if "File too large" in msg:
            return Result(name, "error", message=f"{at}: your code printed more than the grader keeps "
                                                 f"({PRINT_LIMIT >> 20} MB)", **base)
        diagnosis = ex.diagnose_error(f"{typ}: {msg}")
        if diagnosis:
            return Result(name, "error", message=f"{at}: {diagnosis}", detail=f"{typ}: {msg}\n" + _lines(frames),
                          mistake=diagnosis, **base)
        return Result(name, "error", message=text, detail=_lines(frames), **base)
    if kind == "garbled":
        return Result(name, "error", message=f"{label}: the worker's reply could not be read", **base)
    return Result(name, "error", message=f"{label}: the grader failed: {end[-1]}", **base)


def _lines(frames) -> str:
    return "\n".join(f"line {line}: {code}" for line, code in frames[-3:])


# ------------------------------------------------------------------------------------------ functions not in a file
@contextmanager
def _time_limit(seconds: float):
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"did not finish within {seconds:g} s (an endless loop?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_here(ex: Exercise | str, fn: Callable, timeout: float = TIMEOUT_S) -> Result:
    """Grade a function that lives in no file (defined in a notebook cell) in this process, with a time limit.
    Functions from a file go through the worker (`run`)."""
    ex = get(ex) if isinstance(ex, str) else ex
    cases = _build_cases(ex)
    frames = []
    try:
        with _time_limit(timeout):
            for i, case in enumerate(cases):
                frames.append(pickle.dumps(("case", i, encode(ex.observe(fn, case)))))
        frames.append(pickle.dumps(("done",)))
    except NotImplementedError:
        frames.append(pickle.dumps(("todo", len(frames))))
    except Exception as exc:
        frames.append(pickle.dumps(("raised", len(frames), type(exc).__name__, str(exc)[:1000], [])))
    reply = {"frames": frames, "timed_out": False, "printed": ""}
    r = verdict(ex, cases, reply, Path("<notebook>"), getattr(fn, "__name__", "?"), timeout)
    r.where = "defined in this notebook (graded in the kernel)"
    return r


def _file_of(fn: Callable) -> tuple[Path, str] | None:
    """(file, name) to grade for a function the learner passed, or None if it lives in no file."""
    code = getattr(fn, "__code__", None)
    if code is None or "<" in fn.__qualname__:
        return None
    path = Path(code.co_filename)
    return (path, fn.__name__) if path.suffix == ".py" and path.is_file() else None


# ------------------------------------------------------------------------------------------ what the learner calls
def check(name: str, fn: Callable | None = None) -> Result:
    """Grade one exercise now and print the verdict: ✅ passed, ⏳ not implemented yet, ❌ what is wrong.

    check("swiglu") grades your exercises/ file as it is on disk at this moment: edit it, save, and run the cell
    again (no restart, no reload). check("swiglu", fn) grades the file fn was defined in, re-read the same way;
    a function defined in a notebook cell is graded in the kernel."""
    ex = get(name)
    try:
        if fn is None:
            result = run(ex)
        elif (src := _file_of(fn)) is not None:
            result = run(ex, path=src[0], function=src[1])
        else:
            result = run_here(ex, fn)
    except KeyboardInterrupt:
        result = Result(name, "error", message="interrupted: the grader stopped your code")
    print(result.report())
    return result


_HINTS_SHOWN: dict[str, int] = {}


def hint(name: str) -> None:
    """A nudge first; ask again for the recipe."""
    ex = get(name)
    level = _HINTS_SHOWN.get(name, 0)
    tiers = [t for t in (ex.nudge, ex.hint) if t]
    if level < len(tiers):
        more = ' (ask again for the recipe)' if level + 1 < len(tiers) else f' · solution("{name}") shows the code'
        print(f"💡 {name}: {tiers[level]}{more}")
        _HINTS_SHOWN[name] = level + 1
    else:
        print(f'💡 {name}: {tiers[-1]} · that is the whole recipe; solution("{name}") shows the reference code')


def solution_source(name: str) -> str:
    """The reference function from solutions/, without the solution markers."""
    ex = get(name)
    path = impl_file(ex.chapter, "solutions")
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == ex.function:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = text.splitlines()[start - 1:node.end_lineno]
            return "\n".join(l for l in lines if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l)
    raise LookupError(f"{path} has no function {ex.function!r}")


def solution(name: str) -> None:
    """Print the reference solution (from solutions/). Try hint() first: reading it ends the exercise."""
    print(f"# {_rel(impl_file(get(name).chapter, 'solutions'))}\n{solution_source(name)}")


# ------------------------------------------------------------------------------------------ scores
def grade(chapter: int | None = None, impl: str = "exercises", timeout: float = TIMEOUT_S, out=print,
          root: Path | None = None) -> list[Result]:
    """Grade one chapter (every verdict, with its diagnosis) or, without a chapter, every chapter as a progress
    table: each chapter's score and the exercises still to do."""
    root = root or project_root()
    worker().start() if worker().proc is None else None
    chapters = [chapter] if chapter is not None else sorted(CHAPTERS)
    out(f"Grading {root / impl}{os.sep}")
    results, rows = [], []
    for ch in chapters:
        exs = exercises(ch)
        if not exs:
            continue
        t0 = time.perf_counter()
        rs = [run(ex, impl, root, timeout=timeout) for ex in exs]
        results += rs
        score = sum(r.passed for r in rs)
        if chapter is not None:
            out(f"Chapter {ch:02d} ({CHAPTERS[ch]}):")
            for r in rs:
                out("  " + r.report().replace("\n", "\n  "))
            out(f"  score: {score}/{len(rs)}  ({time.perf_counter() - t0:.1f} s)")
        else:
            todo = [r.name for r in rs if not r.passed]
            rows.append(f"  {ch:02d} {CHAPTERS[ch][5:]:<22} {score:>2}/{len(rs):<2}  "
                        + (", ".join(todo) if todo else "done"))
    if chapter is None:
        out(f"  {'chapter':<25} score  still to do")
        for row in rows:
            out(row)
        out(f"  total: {sum(r.passed for r in results)}/{len(results)} · `minillama4 grade N` shows chapter N's "
            "verdicts")
    return results
