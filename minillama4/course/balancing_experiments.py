"""Chapter 03's experiment: three ways to train the same MoE, compared, and cached.

    run = balancing_comparison()           # mini-Scout from scratch, once per variant of VARIANTS
    r = run["variants"]["no balancing"]    # {"evals", "loads", "biases", "train_loss"} (see run_variant)

Every variant is the same model, seed and batches, trained by `minillama4.train.train` (the loop chapter 03 writes
out, step for step) and differing only in balancing:

    no balancing   loss = CE
    Switch loss    loss = CE + α · mean_layers E Σ_i f_i P_i             (TrainConfig.balance_coef = α)
    aux-free bias  b_e ← b_e + γ · sign(mean load − load_e) per step     (minillama4.balancing.AuxFreeBalancer)

The three runs train for minutes, so the result is cached (in `cache_dir()/balancing/`, under a key of the settings,
the data, the code that computes it and the runtime, see cachekey.py) and scaled by the profile (MINILLAMA4_PROFILE).
"""

from __future__ import annotations

import dataclasses
import hashlib

from ..balancing import AuxFreeBalancer
from ..config import Llama4Config
from ..model import Llama4
from ..train import TrainConfig, seed_everything, train
from . import zoo
from .cachekey import cached_json
from .data import course_tokens
from .profile import by_profile, current_profile

COEF = 0.01  # α of the Switch-loss variant
RATE = 0.03  # γ of the aux-free variant: larger than DeepSeek-V3's 0.001, as these runs are a few hundred steps
VARIANTS = {"no balancing": (0.0, 0.0), f"Switch loss {COEF}": (COEF, 0.0), f"aux-free bias γ={RATE}": (0.0, RATE)}


def experiment_setup(profile: str | None = None, seed: int = 0) -> tuple[Llama4Config, TrainConfig]:
    """mini-Scout's config and training settings, shortened to the experiment's steps (the balance coefficient is
    set per variant). `seed` (init and batch order) is 0 in the course; `bench/model_claims_spread.py` runs others."""
    recipe = zoo.recipes(profile, seed)["mini-scout"]
    steps = by_profile(ci=150, laptop=400, profile=profile)
    return recipe.config, dataclasses.replace(recipe.train, steps=steps, warmup_steps=min(50, steps // 5),
                                              eval_every=max(25, steps // 6))


def run_variant(config: Llama4Config, tc: TrainConfig, train_ids, val_ids, rate: float = 0.0,
                progress: bool = False) -> dict:
    """Train a model of `config` from scratch with tc (tc.balance_coef = α of the Switch loss) and, if rate > 0, the
    aux-free bias at rate γ. → {"evals": [[step, validation loss]], "loads": [evaluation][MoE layer][expert] token
    shares, "biases": [step][MoE layer][expert] after each step (None without the bias), "train_loss": per step}."""
    seed_everything(tc.seed)
    model = Llama4(config)
    balancer = AuxFreeBalancer(model, rate) if rate else None
    hist = train(model, train_ids, val_ids, tc, progress=progress, desc="balancing", on_step=balancer)
    return {"evals": [[s, v] for s, v in zip(hist.eval_steps, hist.val_loss)], "loads": hist.expert_load,
            "biases": balancer.history if balancer else None, "train_loss": hist.train_loss}


def balancing_comparison(profile: str | None = None, progress: bool = False, seed: int = 0) -> dict:
    """Every variant of VARIANTS at equal steps, cached. → {"profile", "train": the TrainConfig as a dict (balance
    coefficient 0), "variants": {name: run_variant(...)}}."""
    p = profile or current_profile()
    config, tc = experiment_setup(p, seed)
    train_ids = course_tokens("train", vocab_size=config.vocab_size).ids
    val_ids = course_tokens("val", vocab_size=config.vocab_size).ids

    def compute():
        return {"profile": p, "train": dataclasses.asdict(dataclasses.replace(tc, balance_coef=0.0)),
                "variants": {name: run_variant(config, dataclasses.replace(tc, balance_coef=coef), train_ids, val_ids,
                                               rate, progress) for name, (coef, rate) in VARIANTS.items()}}

    data = hashlib.sha256(train_ids.numpy().tobytes() + val_ids.numpy().tobytes()).hexdigest()[:12]
    payload = {"config": dataclasses.asdict(config), "train": dataclasses.asdict(tc), "variants": VARIANTS,
               "data": data, "profile": p}
    return cached_json("balancing", f"comparison-{p}", payload, compute, __name__)
