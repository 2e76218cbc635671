"""The graded exercises, as tests: `pytest tests/exercises` scores the learner's exercises/ with --impl=exercises,
and CI checks the reference solutions/ (--impl=solutions, the default here: all pass) and the untouched stubs
(--impl=exercises: none pass)."""

import pytest

from minillama4.course.grading import exercises, load_impl, run_exercise

ALL = exercises()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ex", ALL, ids=[f"ch{e.chapter:02d}-{e.name}" for e in ALL])
def test_exercise(ex, request):
    fn = getattr(load_impl(ex.chapter, request.config.getoption("--impl")), ex.function)
    result = run_exercise(ex.name, fn)
    assert result.passed, result.line()
