"""Trained toy models, one cached recipe each: trained on first use, loaded from the cache afterwards.

    model, history = pretrained("mini-scout")     # MoE every layer, 4 experts top-1 + shared expert
    model, history = pretrained("mini-dense")     # the same with a dense FFN of equal active parameters
    model, history = pretrained("mini-behemoth")  # the distillation teacher: 8 wider experts top-1 + shared expert

A recipe is a model config + a training config, scaled by the profile (MINILLAMA4_PROFILE = ci | laptop | gpu).
The cache key (`cachekey.cache_key`) hashes the recipe, the profile, the training data, the code that trains the model
and the runtime (torch version, thread count), so changing any of them retrains.
Models are stored with `save_pretrained` (a transformers-loadable directory) next to `history.json`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import from_pretrained, save_pretrained
from ..config import Llama4Config
from .cachekey import cache_key
from .data import cache_dir, course_tokens, display_path
from ..model import Llama4
from .profile import by_profile, current_profile
from ..train import History, TrainConfig, seed_everything, train


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    config: Llama4Config
    train: TrainConfig


def recipes(profile: str | None = None, seed: int = 0) -> dict[str, Recipe]:
    """All recipes, scaled for the profile. `seed` (init and batch order) is 0 in the course; `bench/claims_spread.py`
    trains others to measure how much a result owes to it."""
    steps = by_profile(ci=250, laptop=1200, gpu=3000, profile=profile)
    tc = TrainConfig(steps=steps, batch_size=16, seq_len=128, lr=3e-3, min_lr=3e-4, warmup_steps=min(50, steps // 5),
                     eval_every=max(25, steps // 12), eval_batches=8, balance_coef=0.01, seed=seed)
    scout = Llama4Config.preset("toy")
    teacher_steps = by_profile(ci=200, laptop=600, profile=profile)
    return {
        "mini-scout": Recipe("mini-scout", "toy Scout: MoE in every layer (4 experts, top-1, + shared expert), iRoPE",
                             scout, tc),
        "mini-dense": Recipe("mini-dense", "the same decoder with a dense SwiGLU of equal active parameters (2F)",
                             scout.replace(moe_layers=[], intermediate_size_mlp=2 * scout.intermediate_size),
                             TrainConfig(**{**asdict(tc), "balance_coef": 0.0})),
        "mini-behemoth": Recipe("mini-behemoth", "distillation teacher (chapter 07): 8 experts top-1 + shared, experts "
                                "1.5x wider (more experts and more active parameters than mini-scout)",
                                scout.replace(num_local_experts=8, intermediate_size=384),
                                TrainConfig(steps=teacher_steps, batch_size=16, seq_len=64, lr=4e-3, min_lr=4e-4,
                                            warmup_steps=min(50, teacher_steps // 5), eval_every=teacher_steps // 4,
                                            eval_batches=8, balance_coef=0.01, seed=seed)),
    }


def cache_path(recipe: Recipe, profile: str, data: torch.Tensor) -> Path:
    """Where the model of `recipe` trained on `data` is cached: keyed by the recipe, the profile, the data, the code
    of this module and everything it imports, and the runtime."""
    payload = {"config": asdict(recipe.config), "train": asdict(recipe.train), "profile": profile,
               "data": hashlib.sha256(data.numpy().tobytes()).hexdigest()}
    return cache_dir() / "models" / f"{recipe.name}-{profile}-{cache_key(payload, __name__)}"


def pretrained(name: str, profile: str | None = None, verbose: bool = True, seed: int = 0) -> tuple[Llama4, History]:
    """The trained toy model `name` and its training history; trains (once) if it is not cached yet."""
    path = pretrained_path(name, profile, verbose, seed)
    model = from_pretrained(path, dtype=torch.float32)
    return model.eval(), History.from_dict(json.loads((path / "history.json").read_text()))


def pretrained_path(name: str, profile: str | None = None, verbose: bool = True, seed: int = 0) -> Path:
    """The cache directory of the trained toy model `name`; trains it (once) if it is not cached yet."""
    profile = profile or current_profile()
    all_recipes = recipes(profile, seed)
    if name not in all_recipes:
        raise ValueError(f"unknown toy model {name!r}; available: {', '.join(all_recipes)}")
    recipe = all_recipes[name]
    train_data = course_tokens("train", vocab_size=recipe.config.vocab_size)
    path = cache_path(recipe, profile, train_data.ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes asking at once: one trains, the other waits and loads
        if not (path / "history.json").is_file():
            _train_and_save(recipe, profile, train_data, path, verbose)
    return path


def _train_and_save(recipe: Recipe, profile: str, train_data, path, verbose: bool) -> None:
    val_data = course_tokens("val", vocab_size=recipe.config.vocab_size)
    if verbose:
        print(f"Training {recipe.name} ({recipe.description}) for {recipe.train.steps} steps ({profile} profile); "
              f"cached afterwards in {display_path(path)}")
    seed_everything(recipe.train.seed)
    model = Llama4(recipe.config)
    history = train(model, train_data.ids, val_data.ids, recipe.train, progress=verbose, desc=recipe.name)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left over from an interrupted run
    save_pretrained(model, tmp)
    (tmp / "history.json").write_text(json.dumps(history.to_dict()))
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)  # only a complete directory ever has the final name
