"""Run notebooks top to bottom and save them with their outputs, so that re-running a chapter changes only what
really changed in it.

    python scripts/execute_notebooks.py notebooks/03_moe_layer.ipynb            # in place (laptop profile only)
    python scripts/execute_notebooks.py notebooks/*.ipynb                       # every chapter
    MINILLAMA4_PROFILE=ci python scripts/execute_notebooks.py notebooks/00_tour.ipynb --out /tmp/00.ipynb

Unlike `jupyter nbconvert --execute`, it saves no execution timestamps in the cells' metadata and no widget state
(random widget ids, progress bars' timings), and it merges consecutive prints into one output however the kernel
happened to split them into messages; the committed outputs come from the `laptop` profile, so writing a
notebook in place under another profile is refused. The kernel runs this Python, in the notebook's folder. Train the
toy models before a run whose outputs you commit (a first run prints that it trains them, a later one does not).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

CELL_TIMEOUT_S = 1800  # per cell: the longest laptop-profile experiments take minutes


def execute(path: Path, out: Path) -> None:
    """Run the notebook at `path` in a fresh kernel and write it, with its outputs, to `out`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps left by an earlier run
    nb.metadata.pop("widgets", None)
    with tempfile.TemporaryDirectory() as jupyter_path:  # a kernel spec for this Python, found first
        spec = Path(jupyter_path) / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        os.environ["JUPYTER_PATH"] = jupyter_path
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                                store_widget_state=False, resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    out.write_text(nbformat.writes(nb) + "\n")


def merge_streams(outputs: list) -> list:
    """Consecutive prints to one stream as one output, as JupyterLab shows them: how the kernel split them into
    messages depends on timing, not on the code."""
    merged = []
    for o in outputs:
        if o.output_type == "stream" and merged and merged[-1].output_type == "stream" and merged[-1].name == o.name:
            merged[-1].text += o.text
        else:
            merged.append(o)
    return merged


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="write the executed notebook here instead of in place (one notebook)")
    args = ap.parse_args(argv)
    profile = os.environ.get("MINILLAMA4_PROFILE", "laptop")
    if args.out is not None and len(args.notebooks) != 1:
        ap.error("--out takes exactly one notebook")
    if args.out is None and profile != "laptop":
        ap.error(f"MINILLAMA4_PROFILE={profile}: committed notebooks hold laptop-profile outputs; use --out")
    for path in args.notebooks:
        if not path.is_file() or path.suffix != ".ipynb":
            ap.error(f"{path} is not a notebook")
        print(f"running {path} ({profile} profile)", flush=True)
        execute(path.resolve(), (args.out or path).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
