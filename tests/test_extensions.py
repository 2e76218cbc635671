"""The worked solutions of the chapters' "Extend it" exercises: every solutions/extend/*.py has a main() that runs
to the end under the ci profile and prints its result, and every one is named by the chapter that poses it (and every
file a chapter names exists)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTEND = sorted((ROOT / "solutions" / "extend").glob("*.py"))
NAMED = r"solutions/extend/(\w+\.py)"


@pytest.mark.parametrize("path", EXTEND, ids=[p.stem for p in EXTEND])
def test_the_worked_solution_runs_and_prints_its_result(path):
    env = {**os.environ, "MINILLAMA4_PROFILE": "ci", "PYTHONPATH": str(ROOT)}
    run_main = "import runpy, sys; runpy.run_path(sys.argv[1])['main']()"  # main() itself, not just the import
    r = subprocess.run([sys.executable, "-c", run_main, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)  # (a generous limit: a busy machine can be several times slower than a quiet one)
    assert r.returncode == 0, f"{path.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{path.name} printed nothing"


def _named_in_notebooks() -> dict[str, set[str]]:
    """file name → the chapters whose markdown names solutions/extend/<file>."""
    named: dict[str, set[str]] = {}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                for name in re.findall(NAMED, "".join(cell["source"])):
                    named.setdefault(name, set()).add(nb.stem)
    return named


def test_every_worked_solution_is_named_by_a_chapter_and_every_named_one_exists():
    named = _named_in_notebooks()
    files = {p.name for p in EXTEND}
    assert not files - named.keys(), f"worked solutions no chapter names: {sorted(files - named.keys())}"
    assert not named.keys() - files, f"chapters name missing files: { {n: named[n] for n in named.keys() - files} }"
