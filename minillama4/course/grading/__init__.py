"""Graded exercises: instant feedback in a notebook, and a score per chapter.

    from minillama4.course.grading import check, hint, solution
    check("swiglu")       # grades exercises/ch01_*.py as it is now: ✅ pass · ⏳ not implemented yet · ❌ diagnosis
    hint("swiglu")        # a nudge; ask again for the recipe
    solution("swiglu")    # the reference code, when you choose to look

Each exercise is a function the learner writes in `exercises/chNN_*.py` (generated from `solutions/` by
`scripts/make_exercises.py`). Its cases are seeded inputs whose expected outputs come from the package itself, never
from hand-typed numbers; each has a catalogue of common mistakes, recognised from the learner's output. The learner's
code runs in a separate worker (time limit, memory cap, its own output); the expected values never leave the
grader. The same cases drive `check`, `minillama4 grade` and `pytest tests/exercises`.
"""

from .core import (CHAPTERS, Case, Exercise, Mistake, Result, compare_outputs, exercises, get, impl_file, load_impl,
                   project_root, register)
from .feedback import check, grade, hint, run, run_here, solution, solution_source

__all__ = ["CHAPTERS", "Case", "Exercise", "Mistake", "Result", "check", "compare_outputs", "exercises", "get",
           "grade", "hint", "impl_file", "load_impl", "project_root", "register", "run", "run_here", "solution",
           "solution_source"]
