"""The mistake catalogues: for every graded exercise, the wrong versions a learner commonly writes. Each must FAIL,
with the grader's diagnosis of that very mistake (not the generic recipe). The wrong versions live in
tests/mistakes/wrong_chNN.py as source code (WRONG), beside correct versions written differently (RIGHT), which must
pass. Each is graded the way a learner's file is: written into an exercise file (the reference solutions with the
version pasted over the reference function) and run in the grader's worker."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from minillama4.course.grading import CHAPTERS, exercises, get, impl_file, project_root, run

CATALOGUE = []  # (exercise name, label, source, words the diagnosis must contain)
RIGHT = []  # (exercise name, label, source): correct versions written differently, which must pass
for ch in sorted(CHAPTERS):
    path = Path(__file__).parent / "mistakes" / f"wrong_ch{ch:02d}.py"
    if not path.exists():
        continue
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, versions in mod.WRONG.items():
        for label, source, words in versions:
            CATALOGUE.append((name, label, source, words))
    for name, versions in getattr(mod, "RIGHT", {}).items():
        RIGHT.extend((name, label, source) for label, source in versions)


def _course_with(tmp_path, name: str, source: str):
    """A course root whose exercise file is the reference solution with `source` (one wrong function) pasted last,
    so the wrong definition replaces the right one."""
    ex = get(name)
    src = impl_file(ex.chapter, "solutions", project_root())
    (tmp_path / "exercises").mkdir()
    (tmp_path / "solutions").mkdir()
    shutil.copy(src, tmp_path / "solutions" / src.name)
    (tmp_path / "exercises" / src.name).write_text(src.read_text() + "\n\n" + source.strip() + "\n")
    return tmp_path


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name,label,source,words", CATALOGUE, ids=[f"{c[0]}-{c[1]}" for c in CATALOGUE])
def test_each_catalogued_mistake_fails_with_its_own_diagnosis(tmp_path, name, label, source, words):
    root = _course_with(tmp_path, name, source)
    r = run(name, root=root)
    assert r.status in ("fail", "error"), f"{label}: expected a fail verdict, got\n{r.report()}"
    assert r.mistake, f"{label}: failed with no diagnosis of the mistake:\n{r.report()}"
    for w in words:
        assert re.search(w, r.message, re.I), f"{label}: the diagnosis does not say {w!r}:\n{r.report()}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name,label,source", RIGHT, ids=[f"{c[0]}-{c[1]}" for c in RIGHT])
def test_correct_versions_written_differently_pass(tmp_path, name, label, source):
    """Mathematically equal ways of writing an exercise (einsum for bmm, a loop for a batched op …) must pass: the
    cases and tolerances catch mistakes, not style."""
    r = run(name, root=_course_with(tmp_path, name, source))
    assert r.passed, f"{label}:\n{r.report()}"


def test_every_exercise_has_a_catalogue_and_every_diagnosis_is_reached():
    by_name = {}
    for name, label, source, words in CATALOGUE:
        by_name.setdefault(name, []).append(label)
    missing = [e.name for e in exercises() if e.name not in by_name]
    assert not missing, f"exercises without catalogued wrong versions: {missing}"
    assert len(CATALOGUE) >= 2 * len(exercises()), f"{len(CATALOGUE)} wrong versions for {len(exercises())} exercises"
    for e in exercises():
        assert e.mistakes, f"{e.name}: the grader knows no mistake for it"
        assert e.nudge, f"{e.name}: no first-tier hint (nudge)"
        for m in e.mistakes:  # every diagnosis the grader can give is the expected one of some wrong version
            assert any(n == e.name and all(re.search(w, m.message, re.I) for w in words)
                       for n, _, _, words in CATALOGUE), f"{e.name}: no wrong version is diagnosed as {m.message!r}"
