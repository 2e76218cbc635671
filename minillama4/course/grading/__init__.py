"""Graded exercises: instant feedback in a notebook, and a score per chapter.

    from minillama4.course.grading import check, load_impl
    ex = load_impl(1)                 # your exercises/ch01_*.py, re-read on every call
    check("swiglu", ex.swiglu)        # ✅ pass · ⏳ not implemented yet · ❌ wrong, with the max error and a hint

Each exercise is a function the learner writes in `exercises/chNN_*.py` (generated from `solutions/` by
`scripts/make_exercises.py`). Its test cases are seeded inputs whose expected outputs come from the package itself,
never from hand-typed numbers. The same cases drive `check`, `minillama4 grade` and `pytest tests/exercises`.
"""

from .core import (CHAPTERS, Case, Exercise, Result, check, exercises, grade, load_impl, project_root,
                   run_exercise)

__all__ = ["CHAPTERS", "Case", "Exercise", "Result", "check", "exercises", "grade", "load_impl", "project_root",
           "run_exercise"]
