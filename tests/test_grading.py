"""The grading loop itself, tried the way a learner meets it: stubs are generated from solutions, untouched stubs
never pass, check() grades the file as it is now (in a real kernel, edit after edit), broken learner code of every
kind gets a verdict that says what happened and never takes the grader down, and the grader cannot be fooled."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from minillama4.course.grading import (CHAPTERS, check, exercises, get, grade, hint, load_impl, project_root, run,
                                       run_here, solution, solution_source)
from minillama4.course.grading.sandbox import worker

ROOT = project_root()
sys.path.insert(0, str(ROOT / "scripts"))
from make_exercises import make_stub  # noqa: E402


def course_copy(tmp_path: Path, chapters=None) -> Path:
    """A fresh course checkout in tmp_path: solutions/ and untouched, freshly generated exercises/."""
    (tmp_path / "solutions").mkdir(parents=True)
    (tmp_path / "exercises").mkdir()
    for ch in chapters or CHAPTERS:
        src = ROOT / "solutions" / f"{CHAPTERS[ch]}.py"
        shutil.copy(src, tmp_path / "solutions" / src.name)
        (tmp_path / "exercises" / src.name).write_text(make_stub(src.read_text(), src.name))
    return tmp_path


def with_function(root: Path, chapter: int, source: str, header: str = "") -> Path:
    """Replace the exercise file of a chapter by the solutions file plus `header` at the top and `source` (one
    function definition, which replaces the reference one) at the end."""
    name = f"{CHAPTERS[chapter]}.py"
    text = (root / "solutions" / name).read_text()
    (root / "exercises" / name).write_text(textwrap.dedent(header) + text + "\n\n" + textwrap.dedent(source) + "\n")
    return root


# ------------------------------------------------------------------------------------------ stubs and solutions
def test_exercises_folder_is_generated_from_solutions():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_exercises.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_chapter_has_at_least_three_exercises_and_every_function_exists():
    for ch in CHAPTERS:
        exs = exercises(ch)
        assert len(exs) >= 3, f"chapter {ch} has {len(exs)} exercises"
        sol, stub = load_impl(ch, "solutions"), load_impl(ch, "exercises")
        for ex in exs:
            assert callable(getattr(sol, ex.function)) and callable(getattr(stub, ex.function))


def test_untouched_stubs_are_all_not_implemented_and_solutions_all_pass(tmp_path):
    root = course_copy(tmp_path)
    lines = []
    stubs = grade(root=root, out=lines.append)
    assert len(stubs) == len(exercises()) and all(r.status == "todo" for r in stubs), "\n".join(lines)
    refs = grade(impl="solutions", root=root, out=lines.append)
    assert all(r.passed for r in refs), "\n".join(r.report() for r in refs if not r.passed)


# ------------------------------------------------------------------------------------------ the learner's loop
def test_check_grades_the_file_as_it_is_now_pass_todo_fail_error(tmp_path, capsys, monkeypatch):
    root = course_copy(tmp_path, [1])
    monkeypatch.chdir(root)  # the checkout the learner is in is the one graded
    assert check("swiglu").status == "todo"
    with_function(root, 1, """
        def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
            return (torch.relu(x_TD @ w_gate_FD.t()) * (x_TD @ w_up_FD.t())) @ w_down_DF.t()
        """)
    relu = check("swiglu")
    assert relu.status == "fail" and "ReLU" in relu.message and relu.max_err > 1e-3
    with_function(root, 1, """
        def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
            return 1 / 0
        """)
    crash = check("swiglu")
    assert crash.status == "error" and "ZeroDivisionError" in crash.message
    assert re.search(r"exercises/ch01_swiglu_experts\.py:\d+", crash.report())  # where the learner's function is
    assert "line " in crash.detail and "1 / 0" in crash.detail  # and the line that broke
    with_function(root, 1, "")
    assert check("swiglu").status == "pass"
    out = capsys.readouterr().out
    assert "⏳ swiglu" in out and "❌ swiglu" in out and "✅ swiglu" in out and 'hint("swiglu")' in out


def test_a_written_function_that_calls_an_unwritten_stub_is_told_which(tmp_path):
    """fp8_linear written, quantize_rowwise still a stub: the verdict names the stub to write first."""
    root = course_copy(tmp_path, [14])
    path = root / "exercises" / f"{CHAPTERS[14]}.py"
    text = path.read_text()
    stub = "    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    head, sep, tail = text.partition("def fp8_linear(")
    path.write_text(head + sep + tail.replace(stub, "    xq, sx = quantize_rowwise(x_MK)\n"
                                              "    return scaled_matmul(xq, sx, wq_NK, sw_N1)\n", 1))
    r = run("fp8_linear", root=root)
    assert r.status == "todo" and "quantize_rowwise" in r.line() and "NotImplementedError" in r.line(), r.report()
    assert run("quantize_rowwise", root=root).line() == "⏳ quantize_rowwise: not implemented yet"


def test_two_argument_check_rereads_the_file_of_a_stale_function(tmp_path, monkeypatch):
    root = course_copy(tmp_path, [1])
    monkeypatch.chdir(root)
    ex = load_impl(1)  # loaded once, as the chapters do, while the file is still a stub
    with_function(root, 1, "")
    assert check("rms_norm", ex.rms_norm).status == "pass"  # graded as the file is now, not as it was loaded


def test_a_function_defined_in_the_notebook_is_graded_in_the_kernel():
    sol = load_impl(1, "solutions")
    r = run_here("swiglu", lambda *a: sol.swiglu(*a))
    assert r.passed and "notebook" in r.where
    wrong = run_here("swiglu", lambda x, a, b, c: (torch.sigmoid(x @ a.t()) * (x @ b.t())) @ c.t())
    assert wrong.status == "fail" and "sigmoid" in wrong.message


def test_a_real_kernel_sees_every_edit_without_restart(tmp_path):
    """One kernel, the learner's way: run the check cell, edit the file, run only the check cell again."""
    jupyter_client = pytest.importorskip("jupyter_client")
    root = course_copy(tmp_path, [1])
    env = {k: v for k, v in os.environ.items() if k != "MINILLAMA4_ROOT"}
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(root), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def cell(code: str) -> str:
            out = []
            kc.execute_interactive(code, timeout=180, output_hook=lambda m: out.append(
                m["content"].get("text", "") if m["msg_type"] == "stream" else ""))
            return "".join(out)

        cell("from minillama4.course.grading import check, load_impl\nex = load_impl(1)")
        check_cell = '_ = check("swiglu")'
        assert "⏳ swiglu" in cell(check_cell)
        with_function(root, 1, """
            def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
                return ((x_TD @ w_gate_FD.t()) * F.silu(x_TD @ w_up_FD.t())) @ w_down_DF.t()
            """)
        assert re.search(r"❌ swiglu: .*GATE", cell(check_cell))
        with_function(root, 1, "")
        assert "✅ swiglu" in cell(check_cell)
        assert "✅ swiglu" in cell('_ = check("swiglu", ex.swiglu)')  # the stale module's function: file re-read
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_hints_come_in_tiers_and_the_solution_on_request(capsys):
    hint("swiglu")
    first = capsys.readouterr().out
    hint("swiglu")
    second = capsys.readouterr().out
    ex = get("swiglu")
    assert ex.nudge in first and ex.hint not in first and ex.hint in second
    solution("swiglu")
    shown = capsys.readouterr().out
    assert "def swiglu(" in shown and "BEGIN SOLUTION" not in shown and "solutions/ch01" in shown
    assert solution_source("swiglu") in shown


def test_grade_without_a_chapter_is_a_progress_table(tmp_path, monkeypatch):
    root = course_copy(tmp_path, [1, 2])
    monkeypatch.chdir(root)
    shutil.copy(root / "solutions" / f"{CHAPTERS[1]}.py", root / "exercises" / f"{CHAPTERS[1]}.py")
    lines = []
    results = grade(out=lines.append)
    text = "\n".join(lines)
    assert f"Grading {root / 'exercises'}" in text  # says which checkout it graded
    assert re.search(r"01 swiglu_experts\s+4/4\s+done", text), text
    todo = ", ".join(e.name for e in exercises(2))
    assert re.search(rf"02 router_scatter_add\s+0/4\s+{re.escape(todo)}", text), text
    assert sum(r.passed for r in results) == 4


def test_the_checkout_graded_is_the_one_you_are_in_unless_told(tmp_path, monkeypatch):
    root = course_copy(tmp_path / "clone", [1])
    monkeypatch.chdir(root / "exercises")
    monkeypatch.delenv("MINILLAMA4_ROOT", raising=False)
    assert project_root() == root.resolve()
    other = course_copy(tmp_path / "other", [1])
    monkeypatch.setenv("MINILLAMA4_ROOT", str(other))
    assert project_root() == other.resolve()
    monkeypatch.setenv("MINILLAMA4_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no exercises/"):
        project_root()


def test_cli_grade_exit_codes_and_what_it_graded(tmp_path):
    root = course_copy(tmp_path, [1])
    env = {k: v for k, v in os.environ.items() if k != "MINILLAMA4_ROOT"}
    r = subprocess.run([sys.executable, "-m", "minillama4", "grade", "1"], capture_output=True, text=True, cwd=root,
                       env=env)
    assert r.returncode == 1 and "⏳" in r.stdout and "score: 0/4" in r.stdout and str(root) in r.stdout
    r = subprocess.run([sys.executable, "-m", "minillama4", "grade", "1", "--impl", "solutions"], capture_output=True,
                       text=True, cwd=root, env=env)
    assert r.returncode == 0 and "score: 4/4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "minillama4", "grade", "42"], capture_output=True, text=True, cwd=root,
                       env=env)
    assert r.returncode == 2 and "no graded exercises for chapter 42" in r.stderr


# ------------------------------------------------------------------------------------------ broken learner code
BROKEN = {
    # name: (header at the top of the exercise file, the function, what the verdict must say)
    "endless loop": ("", """
        def swiglu(*a):
            while True:
                pass
        """, r"case 1 of \d+: did not finish within 3 s"),
    "endless loop that swallows every signal": ("", """
        def swiglu(*a):
            import time
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass
        """, r"did not finish within 3 s"),
    "endless loop at import": ("while True:\n    pass\n", "", r"loading your file: did not finish within 3 s"),
    "os._exit": ("", """
        def swiglu(*a):
            import os
            os._exit(0)
        """, r"ended the process \(exit status 0"),
    "sys.exit": ("", """
        def swiglu(*a):
            import sys
            sys.exit(0)
        """, r"called sys\.exit\(0\)"),
    "exit() at import": ("exit()\n", "", r"while loading your file: your code called sys\.exit"),
    "SIGKILL": ("", """
        def swiglu(*a):
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
        """, r"killed by signal 9 \(SIGKILL: out of memory"),
    "segfault": ("", """
        def swiglu(*a):
            import ctypes
            ctypes.string_at(0)
        """, r"killed by signal 11 \(SIGSEGV"),
    "an allocation over the memory cap": ("", """
        def swiglu(*a):
            return torch.empty(6 << 30, dtype=torch.uint8)   # 6 GB: more than the grader allows
        """, r"ran out of memory"),
    "NaN everywhere": ("", """
        def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
            return torch.full((x_TD.shape[0], w_down_DF.shape[0]), float("nan"))
        """, r"output contains nan"),
    "a numpy array": ("", """
        def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
            return (F.silu(x_TD @ w_gate_FD.t()) * (x_TD @ w_up_FD.t()) @ w_down_DF.t()).numpy()
        """, r"returned numpy\.ndarray, expected a tensor"),
    "float64": ("", """
        def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
            return ((F.silu(x_TD @ w_gate_FD.t()) * (x_TD @ w_up_FD.t())) @ w_down_DF.t()).double()
        """, r"dtype torch\.float64, expected torch\.float32"),
    "endless recursion": ("", """
        def swiglu(*a):
            return swiglu(*a)
        """, r"RecursionError"),
    "printing without end": ("", """
        def swiglu(*a):
            while True:
                print("x" * 100000)
        """, r"printed more than the grader keeps"),
    "a NotImplementedError from torch, not a stub": ("", """
        def swiglu(*a):
            return torch.nn.Module()(a[0])   # a Module without forward: torch raises NotImplementedError
        """, r"case 1 of \d+: NotImplementedError"),
    "a syntax error": ("def broken(:\n", "", r"while loading your file: SyntaxError"),
    "a renamed function": ("", "swiglu = None\n", r"no function named 'swiglu'"),
    "a process left running": ("", """
        def swiglu(*a):
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            return None
        """, r"case 1 of \d+: returned NoneType"),
}
FOOLING = {
    "torch.allclose replaced": "import torch\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
                               "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n",
    "the grader's comparison patched": "import minillama4.course.grading.core as _c\n"
                                       "_c.compare_outputs = lambda *a, **k: (True, 0.0, '')\n"
                                       "_c.Exercise.judge = lambda *a, **k: (True, 0.0, '')\n",
    "the package's reference patched": "import minillama4.ffn as _f\n_f.SwiGLU.forward = lambda self, x: x * 0\n",
    "a forged RESULT line": "print('RESULT [\"pass\", 0.0, \"\"]')\n",
}
WRONG_SWIGLU = """
    def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
        return x_TD[:, :1] * 0 + torch.zeros(x_TD.shape[0], w_down_DF.shape[0])
    """


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_code_gets_a_verdict_that_says_what_happened(tmp_path, kind):
    header, source, expected = BROKEN[kind]
    root = with_function(course_copy(tmp_path, [1]), 1, source, header)
    # 3 s where the time limit is what is tested; elsewhere room for a busy machine (printing 64 MB takes seconds)
    timeout = 3 if "within 3 s" in expected else 30
    t0 = time.monotonic()
    r = run("swiglu", root=root, timeout=timeout)
    assert r.status in ("fail", "error") and re.search(expected, r.message), f"{kind}:\n{r.report()}"
    assert time.monotonic() - t0 < 90
    assert run("rms_norm", impl="solutions", root=root).passed  # the grader is still there, and fine


@pytest.mark.parametrize("kind", FOOLING)
def test_the_grader_cannot_be_fooled(tmp_path, kind):
    root = with_function(course_copy(tmp_path, [1]), 1, WRONG_SWIGLU, FOOLING[kind])
    r = run("swiglu", root=root)
    assert r.status == "fail", f"{kind}:\n{r.report()}"


def test_importing_the_solutions_is_reported(tmp_path):
    root = with_function(course_copy(tmp_path, [1]), 1, """
        import importlib.util, pathlib
        _p = pathlib.Path(__file__).parents[1] / "solutions" / "ch01_swiglu_experts.py"
        _s = importlib.util.spec_from_file_location("ref", _p)
        _m = importlib.util.module_from_spec(_s)
        _s.loader.exec_module(_m)
        swiglu = _m.swiglu
        """)
    r = run("swiglu", root=root)
    assert r.status == "fail" and "solutions/ch01_swiglu_experts.py" in r.message and "own code" in r.message


def test_a_patch_in_one_chapter_never_reaches_another(tmp_path):
    """Within one grading session, chapter 01's file patches torch; chapter 02's None-returning code still fails."""
    root = course_copy(tmp_path, [1, 2])
    with_function(root, 1, "", "import torch\ntorch.Tensor.__eq__ = lambda *a: True\ntorch.equal = lambda *a: True\n")
    with_function(root, 2, "def dispatch(*a):\n    return None\n")
    assert run("rms_norm", root=root).passed
    r = run("dispatch", root=root)
    assert r.status == "fail", r.report()


def test_ctrl_c_stops_the_learners_code_at_once_and_the_grader_recovers(tmp_path, monkeypatch):
    pid_file = tmp_path / "learner.pid"
    root = with_function(course_copy(tmp_path / "course", [1]), 1, f"""
        def swiglu(*a):
            import os
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            while True:
                pass
        """)
    monkeypatch.chdir(root)

    def press_ctrl_c():  # once the learner's loop runs: what the notebook's "interrupt kernel" does
        while not pid_file.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    import threading

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    try:
        r = check("swiglu")
    finally:
        signal.signal(signal.SIGINT, old)
    assert r.status == "error" and "interrupted" in r.message
    assert worker().proc is None  # stopped, with the learner's code:
    learner = int(pid_file.read_text())
    for _ in range(50):
        if not Path(f"/proc/{learner}").exists() or "Z" in Path(f"/proc/{learner}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(learner, signal.SIGKILL)
        pytest.fail("the learner's endless loop outlived the grader")
    with_function(root, 1, "")
    assert check("swiglu").passed  # and the grader starts again on the next check


# ------------------------------------------------------------------------------------------ commands shown to learners
def _grading_commands() -> list[str]:
    """Every grading command the notebooks and the README show a learner."""
    import json

    texts = [(ROOT / "README.md").read_text()]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        texts += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]
    found = set()
    for t in texts:
        found.update(m.strip() for m in re.findall(r"minillama4 grade(?: \d+)?(?![\w-])", t))
        found.update(m.strip().rstrip("`.,)") for m in re.findall(r"pytest tests/exercises[^`\n]*", t))
    return sorted(found)


COMMANDS = _grading_commands()


def test_the_grading_commands_shown_are_found():
    assert any(c.startswith("minillama4 grade") for c in COMMANDS) and \
        any(c.startswith("pytest tests/exercises") for c in COMMANDS), COMMANDS


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_grading_command_shown_fails_on_untouched_stubs(tmp_path, command):
    root = course_copy(tmp_path)
    shutil.copytree(ROOT / "tests" / "exercises", root / "tests" / "exercises")
    shutil.copy(ROOT / "tests" / "conftest.py", root / "tests" / "conftest.py")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    argv = command.split()
    argv = [sys.executable, "-m", *argv]
    env = {k: v for k, v in os.environ.items() if k != "MINILLAMA4_ROOT"}
    r = subprocess.run(argv + (["-p", "no:cacheprovider"] if argv[2] == "pytest" else []), cwd=root, env=env,
                       capture_output=True, text=True, timeout=280)
    assert r.returncode != 0, f"{command} passed on untouched stubs:\n{r.stdout[-2000:]}"
    assert re.search(r"\d+ failed|score: 0/|total: 0/", r.stdout), r.stdout[-2000:]
    assert not re.search(r"\b[1-9]\d* passed", r.stdout), r.stdout[-2000:]
