"""Build every cached artifact the notebooks load, once, up front: `minillama4 zoo warm`.

The chapters load trained toy models from the cache (`zoo.pretrained`, `shapes.pretrained_vlm`, `posttrain.stage`,
`posttrain.rl_ablation`, `fp8_experiments.training_comparison` and `quality_comparison`) and train them on first
use. Inside a notebook that first use is one cell, which a cell time limit (the test suite's) can cut short on a slow
or busy machine. Warming the cache trains them all beforehand, with no limit; afterwards every notebook only loads
them.

    minillama4 zoo list                  # what the notebooks load from the cache
    minillama4 zoo warm [--profile ci]   # build what is missing (each artifact is file-locked: safe to run twice)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .profile import current_profile


@dataclass(frozen=True)
class Artifact:
    name: str  # "kind:name", e.g. "zoo:mini-scout"
    build: Callable[[], object]  # loads it, training (and caching) it first if it is not cached yet


def artifacts(profile: str | None = None, progress: bool = False) -> list[Artifact]:
    """The cached artifacts of a profile, in build order (each stage after the one it starts from)."""
    from ..train import posttrain
    from . import fp8_experiments, shapes, zoo
    from .data import course_tokens

    p = profile or current_profile()
    return [
        *(Artifact(f"data:{split}", lambda s=split: course_tokens(s)) for split in ("train", "val")),
        *(Artifact(f"zoo:{name}", lambda n=name: zoo.pretrained(n, p, verbose=progress)) for name in zoo.recipes(p)),
        *(Artifact(f"vlm:{name}", lambda n=name: shapes.pretrained_vlm(n, p, verbose=progress))
          for name in shapes.recipes(p)),
        *(Artifact(f"posttrain:{name}", lambda n=name: posttrain.stage(n, p, progress=progress))
          for name in posttrain.STAGES),
        Artifact("posttrain:rl-ablation", lambda: posttrain.rl_ablation(p, progress=progress)),
        Artifact("fp8:training", lambda: fp8_experiments.training_comparison(p, progress=progress)),
        Artifact("fp8:quality", lambda: fp8_experiments.quality_comparison(p, progress=progress)),
    ]


def warm(profile: str | None = None, only: list[str] | None = None, progress: bool = False,
         report: Callable[[str], None] = print) -> list[str]:
    """Build (or just load, when cached) the profile's artifacts, or only those named in `only`; report one line
    per artifact with the seconds it took. Returns the names built."""
    todo = artifacts(profile, progress)
    if only:
        unknown = sorted(set(only) - {a.name for a in todo})
        if unknown:
            raise ValueError(f"unknown artifact(s) {', '.join(unknown)}; choose from {', '.join(a.name for a in todo)}")
        todo = [a for a in todo if a.name in only]
    for a in todo:
        t0 = time.perf_counter()
        a.build()
        report(f"{a.name:<24} ready ({time.perf_counter() - t0:.0f} s)")
    return [a.name for a in todo]
