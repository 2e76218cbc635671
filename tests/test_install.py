"""The install claims what is tested: pyproject.toml's lower bound on torch is the torch CI installs (and the README's
commands pin), and the torch running these tests satisfies it."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.match(r"\d+(\.\d+)*", text).group().split("."))


def test_the_torch_requirement_is_the_torch_ci_tests():
    claimed = re.search(r'"torch>=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    ci = re.findall(r"torch==(\d+\.\d+(?:\.\d+)?)", (ROOT / ".ci" / "run").read_text())
    readme = re.findall(r"torch==(\d+\.\d+(?:\.\d+)?)", (ROOT / "README.md").read_text())
    assert claimed and ci, "pyproject.toml must say torch>=X and .ci/run must install torch==Y"
    assert set(readme) == set(ci), f"the README's commands pin torch {set(readme)}, CI installs {set(ci)}"
    assert {_version(v)[:2] for v in ci} == {_version(claimed.group(1))[:2]}, (
        f"pyproject.toml claims torch>={claimed.group(1)} but CI tests torch {ci}: claim what is tested")
    assert _version(torch.__version__)[:2] >= _version(claimed.group(1))[:2], (
        f"torch {torch.__version__} is older than the torch>={claimed.group(1)} pyproject.toml asks for")
