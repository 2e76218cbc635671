"""The grading system itself: stubs are generated from solutions, every stub fails and every solution passes,
check() reports the three outcomes, and a crashing or endless exercise cannot hang the grader."""

import subprocess
import sys
import time

import torch

from minillama4.course.grading import CHAPTERS, check, exercises, grade, load_impl, project_root, run_exercise

ROOT = project_root()


def test_exercises_folder_is_generated_from_solutions():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_exercises.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_chapter_has_at_least_three_exercises_and_every_function_exists():
    written = [ch for ch in CHAPTERS if (project_root() / "solutions" / f"{CHAPTERS[ch]}.py").exists()]
    assert set(range(1, 6)) <= set(written), written
    for ch in written:
        exs = exercises(ch)
        assert len(exs) >= 3, f"chapter {ch} has {len(exs)} exercises"
        sol, stub = load_impl(ch, "solutions"), load_impl(ch, "exercises")
        for ex in exs:
            assert callable(getattr(sol, ex.function)) and callable(getattr(stub, ex.function))


def test_untouched_stubs_are_all_not_implemented():
    for ex in exercises():
        r = run_exercise(ex.name, getattr(load_impl(ex.chapter, "exercises"), ex.function))
        assert r.status == "todo", r.line()


def test_check_reports_pass_todo_fail_and_error(capsys):
    sol = load_impl(1, "solutions")
    assert check("swiglu", sol.swiglu).status == "pass"
    assert check("swiglu", load_impl(1, "exercises").swiglu).status == "todo"
    relu = check("swiglu", lambda x, a, b, c: (torch.relu(x @ a.t()) * (x @ b.t())) @ c.t())
    assert relu.status == "fail" and relu.max_err > 1e-3
    crash = check("swiglu", lambda *a: 1 / 0)
    assert crash.status == "error" and "ZeroDivisionError" in crash.message
    shape = check("swiglu", lambda x, *a: x[:, :1])
    assert shape.status == "fail" and "shape" in shape.message
    out = capsys.readouterr().out
    assert "✅ swiglu" in out and "⏳ swiglu" in out and "❌ swiglu" in out and "hint:" in out


def test_an_endless_loop_times_out_instead_of_hanging():
    def forever(*args):
        while True:
            pass

    t0 = time.perf_counter()
    r = run_exercise("swiglu", forever, timeout=1.0)
    assert r.status == "error" and "did not finish" in r.message and time.perf_counter() - t0 < 10


def test_grade_prints_a_score_table_for_the_solutions():
    lines = []
    results = grade(1, impl="solutions", out=lines.append)
    assert results and all(r.passed for r in results)
    assert f"score: {len(results)}/{len(results)}" in "\n".join(lines)


def test_cli_grade_exit_codes():
    r = subprocess.run([sys.executable, "-m", "minillama4", "grade", "1"], capture_output=True, text=True)
    assert r.returncode == 1 and "⏳" in r.stdout and "score: 0/" in r.stdout
