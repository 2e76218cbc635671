"""Re-running a chapter changes only what really changed: the same chapter run twice under the `ci` profile and saved
by scripts/execute_notebooks.py (the way committed outputs are made) is the same file, byte for byte: its printed
outputs (no timings, memory addresses or temporary paths), its pictures (matplotlib's PNGs are deterministic) and its
metadata (no execution timestamps, no widget state)."""

import difflib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from minillama4.course import zoo

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "10_dpo.ipynb"  # cheap under ci, and it loads trained toy models and draws


def _run(out: Path) -> str:
    env = {**os.environ, "MINILLAMA4_PROFILE": "ci"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebooks.py"), str(CHAPTER), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, f"{CHAPTER.name} failed to run:\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    return out.read_text()


def _outputs(text: str) -> list[list[str]]:
    """Each code cell's outputs as lines to diff; a picture as the hash of its bytes."""
    cells = [c for c in json.loads(text)["cells"] if c["cell_type"] == "code"]
    shown = []
    for c in cells:
        lines = []
        for o in c["outputs"]:
            lines += "".join(o.get("text", "")).splitlines()
            for mime, data in sorted(o.get("data", {}).items()):
                data = "".join(data) if isinstance(data, list) else json.dumps(data)
                lines += [f"{mime} {hashlib.sha256(data.encode()).hexdigest()[:16]}"] if mime.startswith("image/") \
                    else data.splitlines()
        shown.append(lines)
    return shown


def test_a_chapter_run_twice_saves_the_same_notebook(tmp_path):
    zoo.pretrained("mini-scout", profile="ci", verbose=False)  # cached first: else run 1 says it trains, run 2 not
    first, second = _run(tmp_path / "first.ipynb"), _run(tmp_path / "second.ipynb")
    differ = [f"code cell {i}:\n" + "\n".join(difflib.unified_diff(a, b, "first run", "second run", lineterm="", n=0))
              for i, (a, b) in enumerate(zip(_outputs(first), _outputs(second))) if a != b]
    assert not differ, "outputs that change from run to run:\n" + "\n".join(differ)
    assert first == second, "the outputs agree but the saved files differ (metadata?)"
    nb = json.loads(first)
    assert not any("execution" in c["metadata"] for c in nb["cells"]), "execution timestamps were saved"
    assert "widgets" not in nb["metadata"], "widget state was saved"
