"""What the claims-spread scripts share: one measurement per (threads, seed), each in a fresh process, recorded.

    record = open_record(path, profile, code)       # the runs already recorded by this code on this machine, or none
    sweep(record, path, todo, run, jobs)            # run(*item) for each item of todo; each run saved as it finishes
    run_child(script, profile, threads, seed, ...)  # script --child THREADS SEED ... in a fresh process → one run
    print_table(runs, quantities)                   # one column per run, then the min and max of each quantity
    current_runs(results, stem, profile, code)      # what the claim tests read: every machine's runs of this code

A run is {"threads", "seed", "wall_seconds", "values"} (plus whatever the caller adds, e.g. a claim group). The child
process prints its values as JSON on its last line of output.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR")}


def open_record(path: Path, profile: str, code) -> dict:
    """The record in `path` if the same code (any JSON value, e.g. a source hash) made it on this machine; else an
    empty one: runs of other code are dropped, never mixed in. With `code` a dict {group: code} (runs
    that carry a "group"), each group's runs are kept or dropped on their own, and so are the notes of runs carried
    over to a new code hash ("restamped": which groups, from which hash, and why the change could not move them).
    A file that holds another machine's or another profile's runs is an error: a sweep would overwrite them."""
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("runs") and (record.get("machine") != machine() or record.get("profile") != profile):
        raise SystemExit(f"{path} holds runs of profile {record.get('profile')!r} on {record['machine'].get('cpu')!r}, "
                         f"not of {profile!r} on this machine ({machine()['cpu']!r}): pass --json with a file of its "
                         f"own (e.g. {path.stem}_<machine>.json)")
    if isinstance(code, dict) and isinstance(record.get("code"), dict):
        same = {g for g, c in code.items() if record["code"].get(g) == c}
        notes = [n for n in record.get("restamped", []) if set(n["groups"]) & same]
        return {"profile": profile, "machine": machine(), "code": code,
                "runs": [r for r in record["runs"] if r.get("group") in same], **({"restamped": notes} if notes else {})}
    if record.get("code") != code:
        record = {"profile": profile, "machine": machine(), "code": code, "runs": []}
    return record


def current_runs(results: Path, stem: str, profile: str, code) -> dict:
    """{(machine, threads, seed): values} from every record `results/<stem>_<profile>*.json` (one per machine) made
    by `code`; with `code` a dict {group: code}, {group: {(machine, threads, seed): values}} from the runs whose
    group's code is current. Runs of other code are left out: they no longer cover the claims."""
    grouped = isinstance(code, dict)
    runs: dict = {}
    for path in sorted(results.glob(f"{stem}_{profile}*.json")):
        record = json.loads(path.read_text())
        assert record["profile"] == profile, path
        cpu = record["machine"]["cpu"]
        for r in record["runs"]:
            run = cpu, r["threads"], r["seed"]
            if not grouped:
                if record["code"] == code:
                    runs[run] = r["values"]
            elif record["code"].get(r["group"]) == code[r["group"]]:
                runs.setdefault(r["group"], {})[run] = r["values"]
    return runs


def run_child(script: str, profile: str, threads: int, seed: int, *args: str) -> dict:
    """`script --profile P --child THREADS SEED *args` in a fresh process: torch's thread pool is sized before any
    work. Returns the run, with the values the child printed."""
    # idle OpenMP threads sleep instead of spinning: the same numbers (checked), far less time on a busy machine
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE", MINILLAMA4_PROFILE=profile)
    cmd = [sys.executable, script, "--profile", profile, "--child", str(threads), str(seed), *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"threads={threads} seed={seed} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    values = json.loads(out.stdout.strip().splitlines()[-1])
    return {"threads": threads, "seed": seed, "wall_seconds": round(time.perf_counter() - t0, 1), "values": values}


def sweep(record: dict, path: Path, todo: list[tuple], run, jobs: int = 1) -> None:
    """run(*item) for every item of todo, `jobs` at a time (each run is its own process); every finished run is
    added to record["runs"] and the record written to `path` at once, so an interrupted sweep loses nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run, *item) for item in todo]
        for f in as_completed(futures):
            r = f.result()
            label = " ".join(f"{k}={r[k]}" for k in ("group", "threads", "seed") if k in r)
            print(f"done: {label} ({r['wall_seconds']:.0f} s)", flush=True)
            record["runs"] = sorted(record["runs"] + [r], key=lambda r: (r.get("group", ""), r["threads"], r["seed"]))
            path.write_text(json.dumps(record, indent=1) + "\n")


def print_table(runs: list[dict], quantities: list[str]) -> None:
    head = "".join(f"{'t' + str(r['threads']) + ' s' + str(r['seed']):>9}" for r in runs)
    w = max(22, *(len(q) + 2 for q in quantities))
    print(f"{'quantity':<{w}}{head}{'min':>9}{'max':>9}")
    for q in quantities:
        vs = [math.nan if r["values"][q] is None else float(r["values"][q]) for r in runs]  # None: never reached
        known = [v for v in vs if not math.isnan(v)] or [math.nan]
        print(f"{q:<{w}}" + "".join(f"{v:>9.3f}" for v in vs) + f"{min(known):>9.3f}{max(known):>9.3f}")
