"""The notebooks as a learner reads them: each chapter opens with what you will build and learn and how long it runs,
draws its mechanisms before building them, keeps its markdown short, says nothing meant for maintainers, and its
committed outputs come from one consistent run (the same numbers wherever a chapter quotes them, no machine paths,
no frozen progress bars, no memory addresses)."""

import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_MEDIAN_WORDS = 60

MAINTAINER = [r"\bissue\s*#?\d+", r"\bsessions?\b", r"floating[- ]point paths?", r"\bAVX", r"\bMKL\b", r"\bATen\b",
              r"\bEPYC\b", r"\bZen ?4\b", r"\bNBVAL", r"\bnbval\b", r"this machine", r"\bearlier (recipe|run)s?\b",
              r"\bprevious (recipe|version)\b"]
MACHINE_PATH = r"(?<![\w.])/(root|home|tmp|work|Users|private/var)/[\w.]"
UNSTABLE = {"a machine path": MACHINE_PATH, "a progress bar stopped before 100%": r"\b\d{1,2}%\|",
            "a progress bar": r"\d+/\d+ \[\d+:\d+", "a memory address": r"\b0x[0-9a-f]{8,}\b"}


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def output_text(cell: dict) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        parts.append("".join(o.get("data", {}).get("text/plain", "")))
        parts.append("".join(o.get("data", {}).get("text/markdown", "")))
    return "".join(parts)


def markdown(path: Path) -> list[str]:
    return [source(c) for c in cells(path) if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_chapter_opens_with_what_you_build_learn_and_how_long_it_runs(path):
    first = markdown(path)[0]
    assert first.startswith("# "), first[:80]
    for words in ("You will build", "You will learn", "Runs in"):
        assert words in first, f"{path.name}: the opening cell does not say {words!r}"
    assert re.search(r"Runs in about \d+ minutes?", first), "the run time is not a measured number of minutes"


@pytest.mark.parametrize("path", CHAPTERS[1:], ids=[p.stem for p in CHAPTERS[1:]])
def test_a_chapter_draws_its_mechanism(path):
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    assert re.search(r"\bdiagrams\.\w+\(", code), f"{path.name} draws no diagram from minillama4.course.diagrams"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_is_short(path):
    words = [len(m.split()) for m in markdown(path)]
    median = statistics.median(words)
    assert median <= MAX_MEDIAN_WORDS, f"{path.name}: median markdown cell is {median} words (max {MAX_MEDIAN_WORDS})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_maintainer_material_in_learner_text(path):
    for m in markdown(path):
        for pat in MAINTAINER:
            assert not re.search(pat, m, re.I), f"{path.name}: learner text matches {pat!r}: {m[:120]!r}"
    for c in cells(path):
        if c["cell_type"] == "code":
            assert "NBVAL_" not in source(c), f"{path.name}: an nbval marker in a cell's source (use a cell tag)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_hold_nothing_that_changes_from_run_to_run(path):
    for i, c in enumerate(cells(path)):
        text = output_text(c)
        for what, pat in UNSTABLE.items():
            assert not re.search(pat, text), f"{path.name} cell {i}: output shows {what}: {text[:200]!r}"


def _quoted(pattern: str) -> dict[str, set[str]]:
    """value → the notebooks quoting it, for every match of pattern (one group: the number) in outputs and text."""
    found: dict[str, set[str]] = {}
    for path in NOTEBOOKS:
        for c in cells(path):
            for text in (output_text(c), source(c) if c["cell_type"] == "markdown" else ""):
                for m in re.finditer(pattern, text):
                    found.setdefault(m.group(1), set()).add(path.stem)
    return found


@pytest.mark.parametrize("model", ["mini-scout", "mini-dense", "mini-behemoth"])
def test_a_toy_models_validation_loss_is_the_same_in_every_chapter(model):
    values = _quoted(rf"{model}\b[^\n]{{0,80}}?validation loss[^\d\n]{{0,20}}(\d+\.\d+)")
    assert len(values) <= 1, f"{model}'s validation loss is quoted differently: {values}"


def test_the_post_training_report_card_is_the_same_in_every_chapter():
    for stage in ("SFT", "RL", "DPO"):
        values = _quoted(rf"\b{stage}\b[^\n]{{0,20}}?held-out accuracy[^\d\n]{{0,10}}(\d\.\d+)")
        assert len(values) <= 1, f"{stage}'s held-out accuracy is quoted differently: {values}"
