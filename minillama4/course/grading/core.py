"""The grader's vocabulary: exercises, their cases, the catalogue of common mistakes, comparing outputs, verdicts.

Everything in this file runs in the learner-facing process (the notebook kernel, `minillama4 grade`, pytest). The
expected values are computed here from the package and never leave this process: the learner's code runs in a
separate worker (`sandbox.py`), only its outputs come back, and they are compared and diagnosed here.

    case inputs ──► worker: your function ──► outputs ──► compare with the package's values ──► ✅ / ❌ + diagnosis
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
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
    12: "ch12_expert_parallel",
    13: "ch13_metap",
    14: "ch14_fp8",
}
TOLERANCE = dict(atol=1e-5, rtol=1e-4)  # float32 comparisons in every graded case


@dataclass
class Case:
    args: tuple  # positional arguments for the learner's function
    expected: Any  # what the package computes for them (tensor, tuple of tensors, number, …)
    kwargs: dict = field(default_factory=dict)


@dataclass
class Mistake:
    """A common wrong version of an exercise, recognised from the learner's output.

    Give one of: `wrong`, the wrong version itself (same signature as the exercise): the learner made this mistake
    when their output equals what `wrong` returns on the same inputs; `test(case, got) -> bool`, a property of the
    learner's output that shows the mistake (e.g. "the scores sum to 1 over the experts"); or `raises`, a regular
    expression for the error ("Type: message") the mistake makes the learner's code raise."""

    message: str  # what the learner did, in their terms, and what to do instead
    wrong: Callable | None = None
    test: Callable[[Case, Any], bool] | None = None
    raises: str | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.wrong, self.test, self.raises)) != 1:
            raise ValueError(f"a Mistake needs exactly one of wrong=, test= or raises= ({self.message!r})")


@dataclass
class Exercise:
    name: str  # what check() is called with, e.g. "swiglu"
    chapter: int
    function: str  # the function's name in exercises/chNN_*.py
    cases: Callable[[], list[Case]]  # builds seeded cases (called once per check, in this process)
    hint: str  # the recipe: hint()'s second answer
    exact: bool = False  # integer outputs (indices, masks, tokens) must match exactly
    nudge: str = ""  # hint()'s first answer: where to look, not the recipe
    mistakes: list[Mistake] = field(default_factory=list)  # the common wrong versions, each with its diagnosis
    # what is compared, when it is more than the return value: probe(fn, *args, **kwargs) runs in the worker beside
    # the learner's function (e.g. also the gradient, or whether an input was modified). A module-level function of
    # a minillama4.course.grading module, so the worker can import it. Expected values use the same probe.
    probe: Callable | None = None
    # custom comparison compare(got, expected) -> (ok, max_err, message), instead of compare_outputs
    compare: Callable | None = None

    def __post_init__(self):
        if self.probe is not None and ("<" in self.probe.__qualname__
                                       or not self.probe.__module__.startswith("minillama4.course.grading")):
            raise ValueError(f"{self.name}: a probe must be a module-level function of a grading module")

    def observe(self, fn: Callable, case: Case):
        """What is compared for fn on this case (in this process: for the package's wrong versions)."""
        if self.probe is not None:
            return self.probe(fn, *case.args, **case.kwargs)
        return fn(*case.args, **case.kwargs)

    def judge(self, got, expected) -> tuple[bool, float, str]:
        if self.compare is not None:
            return self.compare(got, expected)
        return compare_outputs(got, expected, self.exact)

    def diagnose_error(self, error: str) -> str | None:
        """The message of the first catalogued mistake whose error matches "Type: message", or None."""
        import re

        for m in self.mistakes:
            if m.raises is not None and re.search(m.raises, error):
                return m.message
        return None

    def diagnose(self, case: Case, got) -> str | None:
        """The message of the first catalogued mistake the learner's output shows, or None."""
        for m in self.mistakes:
            if m.raises is not None:
                continue
            try:
                if m.test is not None:
                    hit = bool(m.test(case, got))
                else:
                    hit = self.judge(got, self.observe(m.wrong, case))[0]
            except Exception:  # a test that cannot read this output (wrong type, shape …) does not match it
                hit = False
            if hit:
                return m.message
        return None


_REGISTRY: dict[str, Exercise] = {}


def register(ex: Exercise) -> Exercise:
    if ex.name in _REGISTRY:
        raise ValueError(f"exercise {ex.name!r} registered twice")
    _REGISTRY[ex.name] = ex
    return ex


def seeded(seed: int) -> torch.Generator:
    """A CPU generator for one case's inputs: each case draws from its own seed, so their order never matters."""
    return torch.Generator().manual_seed(seed)


def _load_specs() -> None:
    for n in CHAPTERS:
        name = f"minillama4.course.grading.ch{n:02d}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def exercises(chapter: int | None = None) -> list[Exercise]:
    """All registered exercises (of one chapter), in chapter order."""
    _load_specs()
    return sorted((e for e in _REGISTRY.values() if chapter is None or e.chapter == chapter),
                  key=lambda e: e.chapter)


def get(name: str) -> Exercise:
    _load_specs()
    if name not in _REGISTRY:
        raise KeyError(f"no exercise named {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# ------------------------------------------------------------------------------------------ finding the learner's code
def _is_course_root(d: Path) -> bool:
    return (d / "exercises").is_dir() and (d / "solutions").is_dir()


def project_root() -> Path:
    """The checkout being graded: $MINILLAMA4_ROOT if set, else the first folder from the current directory upwards
    that holds exercises/ and solutions/ (the checkout you are working in), else the checkout the package was
    installed from."""
    env = os.environ.get("MINILLAMA4_ROOT")
    if env:
        if not _is_course_root(Path(env)):
            raise FileNotFoundError(f"MINILLAMA4_ROOT={env} has no exercises/ and solutions/ folders")
        return Path(env).resolve()
    for d in [Path.cwd(), *Path.cwd().parents]:
        if _is_course_root(d):
            return d.resolve()
    here = Path(__file__).resolve().parents[3]
    if _is_course_root(here):
        return here
    raise FileNotFoundError("cannot find the course's exercises/ folder; run from inside the course checkout or "
                            "set MINILLAMA4_ROOT to its root")


def impl_file(chapter: int, impl: str = "exercises", root: Path | None = None) -> Path:
    """exercises/chNN_*.py (yours) or solutions/chNN_*.py (the reference) of a chapter."""
    if impl not in ("exercises", "solutions"):
        raise ValueError(f"impl must be 'exercises' or 'solutions', got {impl!r}")
    if chapter not in CHAPTERS:
        raise ValueError(f"no graded exercises for chapter {chapter}; chapters: {sorted(CHAPTERS)}")
    return (root or project_root()) / impl / f"{CHAPTERS[chapter]}.py"


def load_impl(chapter: int, impl: str | None = None):
    """Import the chapter's module from exercises/ (default, or $MINILLAMA4_IMPL) or solutions/ into this process,
    to call its functions yourself. `check()` does not need it: it always grades the file as it is now."""
    path = impl_file(chapter, impl or os.environ.get("MINILLAMA4_IMPL", "exercises"))
    spec = importlib.util.spec_from_file_location(f"_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ comparing outputs
def _flatten(x) -> list:
    if isinstance(x, (tuple, list)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def _at(index: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _typename(x) -> str:
    return getattr(x, "type_name", type(x).__name__)  # an object the worker could not send names its own type


def _first(mask: torch.Tensor) -> tuple:
    return tuple(mask.nonzero()[0].tolist())


def compare_outputs(got, expected, exact: bool) -> tuple[bool, float, str]:
    """(ok, max abs error, what differs) between the learner's output and the expected one. The message names the
    first wrong entry with the expected and the learner's value."""
    g, e = _flatten(got), _flatten(expected)
    if len(g) != len(e):
        return False, math.inf, f"returned {len(g)} value(s), expected {len(e)}"
    worst = 0.0
    for i, (a, b) in enumerate(zip(g, e)):
        what = f"output {i}: " if len(e) > 1 else ""
        if isinstance(b, torch.Tensor):
            if not isinstance(a, torch.Tensor):
                return False, math.inf, f"{what}returned {_typename(a)}, expected a tensor"
            if a.shape != b.shape:
                return False, math.inf, f"{what}shape {tuple(a.shape)}, expected {tuple(b.shape)}"
            if b.is_complex():  # compared as (real, imaginary) pairs, within the float tolerance
                if not a.is_complex():
                    return False, math.inf, f"{what}dtype {a.dtype}, expected a complex tensor ({b.dtype})"
                a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
            if (b.dtype == torch.bool) != (a.dtype == torch.bool) or \
                    (b.is_floating_point() and a.is_floating_point() and a.dtype != b.dtype):
                return False, math.inf, f"{what}dtype {a.dtype}, expected {b.dtype}"
            if b.is_floating_point() and not a.is_floating_point():
                return False, math.inf, f"{what}dtype {a.dtype}, expected a floating-point tensor ({b.dtype})"
            if exact or not b.is_floating_point():
                if a.is_floating_point() and not b.is_floating_point():
                    return False, math.inf, f"{what}dtype {a.dtype}, expected integers ({b.dtype})"
                diff = a.to(b.dtype) != b
                if diff.any():
                    at = _first(diff)
                    return False, math.inf, (f"{what}{int(diff.sum())} of {b.numel()} entries differ; first at "
                                             f"{_at(at)}: expected {_fmt(b[at].item())}, got {_fmt(a[at].item())}")
                continue
            bad = torch.isnan(a) & ~torch.isnan(b) | torch.isinf(a) & ~torch.isinf(b)
            if bad.any():
                at = _first(bad)
                return False, math.inf, (f"{what}output contains {a[at].item()} at {_at(at)} (expected "
                                         f"{_fmt(b[at].item())}): {int(bad.sum())} non-finite entries")
            ad, bd = a.detach().double(), b.double()
            err = (ad - bd).abs().nan_to_num(0.0, posinf=0.0)  # equal infinities give nan: not an error
            worst = max(worst, float(err.max()) if err.numel() else 0.0)
            close = torch.isclose(a.detach(), b, equal_nan=True, **TOLERANCE)
            if not close.all():
                at = _first(~close)
                return False, worst, (f"{what}max error {worst:.3g}; first wrong entry at {_at(at)}: expected "
                                      f"{_fmt(b[at].item())}, got {_fmt(a[at].item())}")
        elif isinstance(b, bool) or b is None or isinstance(b, str):
            if type(a) is not type(b) or a != b:
                return False, math.inf, f"{what}got {a!r}, expected {b!r}"
        elif isinstance(b, (int, float)):
            if isinstance(a, torch.Tensor) and a.numel() == 1:
                a = a.item()
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                return False, math.inf, f"{what}returned {_typename(a)}, expected a number"
            if math.isnan(a) and not math.isnan(b):
                return False, math.inf, f"{what}got nan, expected {_fmt(b)}"
            err = abs(float(a) - float(b))
            worst = max(worst, err)
            if isinstance(b, int) and exact and a != b or \
                    err > TOLERANCE["atol"] + TOLERANCE["rtol"] * abs(b):
                return False, worst, f"{what}got {_fmt(a)}, expected {_fmt(b)}"
        elif a != b:
            return False, math.inf, f"{what}got {a!r}, expected {b!r}"
    return True, worst, ""


# ------------------------------------------------------------------------------------------ verdicts
ICONS = {"pass": "✅", "todo": "⏳", "fail": "❌", "error": "❌"}


@dataclass
class Result:
    name: str
    status: str  # "pass" | "todo" (NotImplementedError) | "fail" (wrong answer) | "error" (crash, timeout, killed …)
    max_err: float = float("nan")
    message: str = ""  # what went wrong: the diagnosis of the mistake, or what the worker saw
    where: str = ""  # file:line of the graded function
    detail: str = ""  # the comparison behind a diagnosis (first wrong entry), or the traceback's last lines
    mistake: str = ""  # the catalogued mistake the output showed, if one did
    output: str = ""  # what the learner's code printed

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def _ipython_display_(self) -> None:
        """check() already printed the verdict: a notebook cell ending in check(...) shows it once, not twice."""

    def line(self) -> str:
        """One line: icon, name, verdict."""
        text = {"pass": "passed", "todo": "not implemented yet" + (f": {self.message}" if self.message else "")
                }.get(self.status, self.message)
        return f"{ICONS[self.status]} {self.name}: {text}"

    def report(self) -> str:
        """The verdict with what a learner needs to act on it."""
        lines = [self.line()]
        if self.detail:
            lines += ["   " + d for d in self.detail.splitlines()]
        if self.output and self.status != "pass":
            out = self.output.rstrip()
            lines.append("   your code printed:")
            lines += ["     | " + o for o in out.splitlines()[-8:]]
        if self.status in ("fail", "error"):
            tail = f' · hint("{self.name}") for a nudge'
            lines.append(f"   your function: {self.where or '?'}{tail}")
        return "\n".join(lines)
