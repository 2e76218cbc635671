"""The graded exercises, as tests: `pytest tests/exercises` scores YOUR exercises/ (the default, --impl=exercises);
CI also checks the reference solutions/ (--impl=solutions: all pass) and the untouched stubs (none pass). Each case
runs in the grader's worker process, isolated from the others."""

import pytest

from minillama4.course.grading import exercises, run

ALL = exercises()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ex", ALL, ids=[f"ch{e.chapter:02d}-{e.name}" for e in ALL])
def test_exercise(ex, request):
    result = run(ex, request.config.getoption("--impl"))
    assert result.passed, result.report()
