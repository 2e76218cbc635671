"""The notebooks as committed: every one is collected by the test run (nbval executes it in CI), every one carries
the outputs of a real run, and every graded exercise of a chapter has its check(...) cell in that chapter."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minillama4.course.grading import exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTER_FILES = {0: "00_tour", 1: "01_swiglu_experts", 2: "02_router_scatter_add", 3: "03_moe_layer",
                 4: "04_attention_irope", 5: "05_decoder_generation", 6: "06_early_fusion", 7: "07_distillation",
                 8: "08_sft", 9: "09_online_rl", 10: "10_dpo", 11: "11_scout_on_h100", 12: "12_expert_parallel",
                 13: "13_metap", 14: "14_fp8"}
GRADED_WITHOUT_NOTEBOOK: set[int] = set()  # chapters whose exercises are graded before their notebook exists
TEXT_CHAPTERS = range(6)  # chapters 00-05 must exist; later ones are checked once their notebook is written


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_the_text_model_chapters_exist():
    names = {p.stem for p in NOTEBOOKS}
    wanted = {CHAPTER_FILES[n] for n in TEXT_CHAPTERS}
    assert wanted <= names, f"missing: {wanted - names}"


def test_every_notebook_is_collected_by_the_test_run():
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True)
    collected = {line.split("::")[0] for line in r.stdout.splitlines() if ".ipynb::" in line}
    missing = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS if p.relative_to(ROOT).as_posix() not in collected]
    assert not missing, f"notebooks that the test run does not execute: {missing}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_with_the_outputs_of_a_full_run(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert code, f"{path.name} has no code"
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not not_run, f"{path.name}: code cells {not_run} were never executed"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), f"{path.name}: cells were run out of order {counts}"
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, f"{path.name}: most cells have no output"
    errors = [o.get("ename") for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed with errors {errors}"


@pytest.mark.parametrize("chapter", sorted({e.chapter for e in exercises()}))
def test_each_exercise_has_a_check_cell_in_its_chapter(chapter):
    """check("name") grades the exercise file as it is on disk (the convention); the older check("name", ex.name)
    form needs the chapter's module loaded with load_impl(N) first."""
    if chapter in GRADED_WITHOUT_NOTEBOOK:  # its exercises are graded (minillama4 grade N); no chapter to hold them yet
        assert not list((ROOT / "notebooks").glob(f"{chapter:02d}_*.ipynb")), \
            f"chapter {chapter} has a notebook now: add it to CHAPTER_FILES and give it check cells"
        return
    path = ROOT / "notebooks" / f"{CHAPTER_FILES[chapter]}.ipynb"
    source = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert re.search(r"from minillama4\.course\.grading import [^\n]*\bcheck\b", source), \
        f"{path.name} does not import check from minillama4.course.grading"
    if re.search(r"\bcheck\(\s*[\"']\w+[\"']\s*,", source):
        assert f"load_impl({chapter})" in source, f"{path.name} passes functions to check(...) without load_impl"
    checked = set(re.findall(r"\bcheck\(\s*[\"'](\w+)[\"']\s*[,)]", source))
    missing = {e.name for e in exercises(chapter)} - checked
    assert not missing, f"{path.name} has no check(...) cell for {sorted(missing)}"
