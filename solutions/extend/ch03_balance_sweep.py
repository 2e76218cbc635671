"""Extend it, chapter 03: how strong should balancing be? A sweep of the Switch coefficient α and of the aux-free
rate γ, with the load imbalance and the validation loss each one ends with.

Short runs of the toy Scout (the `mini-scout` config; the same seed, initial weights and batches in every run) that
differ only in balancing:

    Switch loss   loss = CE + α · mean_layers E Σ_i f_i P_i           (TrainConfig.balance_coef = α)
    aux-free      b_e ← b_e + γ · sign(mean load − load_e) per step   (minillama4.balancing.AuxFreeBalancer)

Each run is `balancing_experiments.run_variant`, the chapter's experiment at another α or γ.

For each run it prints the load imbalance (max load / mean load, 1 = even, E = every token on one expert; mean over
the MoE layers, on the fixed validation windows) at the end and averaged over the second half of training, and the
final validation loss. A single short run per setting is noisy: read the trend along each sweep, not one digit.

    python solutions/extend/ch03_balance_sweep.py          # MINILLAMA4_PROFILE=ci for a short run
"""

import dataclasses

import torch

from minillama4.balancing import load_imbalance
from minillama4.course import zoo
from minillama4.course.balancing_experiments import run_variant
from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile

ALPHAS = (0.0, 0.001, 0.01, 0.1)  # Switch loss coefficients (0 = no balancing at all)
GAMMAS = (0.003, 0.01, 0.03, 0.1)  # aux-free bias rates


def run(config, tc, train_ids, val_ids, rate: float = 0.0) -> dict:
    """One training run (the chapter's experiment); returns the imbalance at the end and over the second half, and
    the validation loss."""
    r = run_variant(config, tc, train_ids, val_ids, rate)
    imb_S = load_imbalance(r["loads"]).mean(-1)  # [evaluations]: mean over MoE layers
    return {"final": imb_S[-1].item(), "late": imb_S[len(imb_S) // 2:].mean().item(), "val": r["evals"][-1][1]}


def main() -> None:
    recipe = zoo.recipes()["mini-scout"]
    steps, batch, seq_len = by_profile(ci=(40, 8, 64), laptop=(400, 16, 128))
    tc = dataclasses.replace(recipe.train, steps=steps, batch_size=batch, seq_len=seq_len,
                             warmup_steps=min(50, steps // 5), eval_every=max(10, steps // 8), eval_batches=4)
    train_ids = course_tokens("train", vocab_size=recipe.config.vocab_size).ids
    val_ids = course_tokens("val", vocab_size=recipe.config.vocab_size).ids
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and the numbers do not depend on the core count
    try:
        print(f"toy Scout ({recipe.config.num_local_experts} experts, top-{recipe.config.num_experts_per_tok}), "
              f"{steps} steps of {batch} × {seq_len} tokens per run")
        print(f"{'balancing':24s} {'imbalance at the end':>21s} {'over the 2nd half':>18s} {'val loss':>9s}")
        for label, coef, rate in ([(f"Switch α = {a:g}" if a else "none", a, 0.0) for a in ALPHAS]
                                  + [(f"aux-free γ = {g:g}", 0.0, g) for g in GAMMAS]):
            r = run(recipe.config, dataclasses.replace(tc, balance_coef=coef), train_ids, val_ids, rate)
            print(f"{label:24s} {r['final']:21.3f} {r['late']:18.3f} {r['val']:9.3f}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
