"""Build every cached artifact the notebooks load, once, up front: `minillama4 zoo warm`.

The chapters load trained toy models and experiments from the cache (`zoo.pretrained`, `shapes.pretrained_vlm`,
`posttrain.stage`, `posttrain.rl_ablation`, `balancing_experiments.balancing_comparison`,
`fp8_experiments.training_comparison` and `quality_comparison`, `int4_experiments.int4_quality`,
`metap_experiments.lr_sweep`) and train them on first use. Inside a notebook that first use is one cell, which a
cell time limit (the test suite's) can cut short on a slow or busy machine. Warming the cache trains them all
beforehand, with no limit; afterwards every notebook only loads them.

    minillama4 zoo list                  # what the notebooks load from the cache
    minillama4 zoo warm [--profile ci]   # build what is missing (each artifact is file-locked: safe to run twice)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .profile import current_profile


@dataclass(frozen=True)
class Artifact:
    name: str  # "kind:name", e.g. "zoo:mini-scout"
    build: Callable[[], object]  # loads it, training (and caching) it first if it is not cached yet


def artifacts(profile: str | None = None, progress: bool = False) -> list[Artifact]:
    """The cached artifacts of a profile, in build order (each stage after the one it starts from)."""
    from ..train import posttrain
    from . import balancing_experiments, fp8_experiments, int4_experiments, metap_experiments, shapes, zoo
    from .data import course_tokens

    p = profile or current_profile()
    return [
        *(Artifact(f"data:{split}", lambda s=split: course_tokens(s)) for split in ("train", "val")),
        *(Artifact(f"zoo:{name}", lambda n=name: zoo.pretrained(n, p, verbose=progress)) for name in zoo.recipes(p)),
        *(Artifact(f"vlm:{name}", lambda n=name: shapes.pretrained_vlm(n, p, verbose=progress))
          for name in shapes.recipes(p)),
        Artifact("fp8:training", lambda: fp8_experiments.training_comparison(p, progress=progress)),
        Artifact("balancing:comparison", lambda: balancing_experiments.balancing_comparison(p, progress=progress)),
        *(Artifact(f"posttrain:{name}", lambda n=name: posttrain.stage(n, p, progress=progress))
          for name in posttrain.STAGES),
        Artifact("posttrain:rl-ablation", lambda: posttrain.rl_ablation(p, progress=progress)),
        Artifact("fp8:quality", lambda: fp8_experiments.quality_comparison(p, progress=progress)),
        Artifact("int4:quality", lambda: int4_experiments.int4_quality(p, progress=progress)),
        Artifact("metap:lr-sweep", lambda: metap_experiments.lr_sweep(p, progress=progress)),
    ]


# What `warm(jobs=2)` builds in a second process while this one builds mini-scout and the chain that starts from it
# (SFT → RL → DPO, the FP8 and int4 quality comparisons): the artifacts that start from nothing but the corpus (the
# other toy models, the FP8 training and balancing comparisons), then the RL ablation (it starts from SFT, which this
# process has finished by then, and runs beside RL and DPO here), then the MetaP learning-rate sweep.
INDEPENDENT = ("zoo:mini-dense", "zoo:mini-behemoth", "vlm:mini-vlm", "vlm:mini-vlm-blind", "fp8:training",
               "balancing:comparison", "posttrain:rl-ablation", "metap:lr-sweep")
# ... which both processes build, each taking the runs nobody has started (every run is file-locked on its own):
# this one turns to it as soon as its chain is done, before it waits for anything the other process still trains.
SHARED = ("metap:lr-sweep",)


def warm(profile: str | None = None, only: list[str] | None = None, progress: bool = False,
         report: Callable[[str], None] = print, jobs: int = 1) -> list[str]:
    """Build (or just load, when cached) the profile's artifacts, or only those named in `only`; report one line
    per artifact with the seconds it took. Returns the names built. jobs=2: the INDEPENDENT ones in a second process
    (same profile and thread count: the cache key includes both), the rest here; every artifact is file-locked, so
    the two never train the same one."""
    todo = artifacts(profile, progress)
    if only:
        unknown = sorted(set(only) - {a.name for a in todo})
        if unknown:
            raise ValueError(f"unknown artifact(s) {', '.join(unknown)}; choose from {', '.join(a.name for a in todo)}")
        todo = [a for a in todo if a.name in only]
    side = [a.name for a in todo if a.name in INDEPENDENT] if jobs > 1 else []
    data = [a for a in todo if a.name.startswith("data:")]
    # this process: its own chain, then the shared work, then the second process's artifacts (by then mostly loaded)
    rest = sorted((a for a in todo if a not in data),
                  key=lambda a: 0 if a.name not in side else 1 if a.name in SHARED else 2)
    for a in data:  # both processes read the encoded corpus
        _build(a, report)
    child, err = _start_side(profile or current_profile(), side) if side else (None, None)
    try:
        for a in rest:
            _build(a, report)
    finally:
        if child is not None and child.wait() != 0:
            err.seek(0)
            raise RuntimeError(f"warming {', '.join(side)} in a second process failed:\n{err.read()[-2000:]}")
    return [a.name for a in todo]


def _build(a: Artifact, report: Callable[[str], None]) -> None:
    t0 = time.perf_counter()
    a.build()
    report(f"{a.name:<24} ready ({time.perf_counter() - t0:.0f} s)")


def _start_side(profile: str, names: list[str]):
    """`minillama4 zoo warm --only NAMES` in another process with this one's thread count → (process, its stderr)."""
    import os
    import subprocess
    import sys
    import tempfile

    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "MINILLAMA4_PROFILE": profile}
    root = str(Path(__file__).resolve().parents[2])  # the checkout this package is imported from
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    err = tempfile.TemporaryFile("w+")  # (a file, not a pipe: a pipe nobody reads can fill up and stall the child)
    child = subprocess.Popen([sys.executable, "-m", "minillama4", "zoo", "warm", "--profile", profile, "--quiet",
                              "--only", *names], env=env, stdout=subprocess.DEVNULL, stderr=err)
    return child, err
