"""How much the notebooks' claims about trained toy models move with torch's thread count and the seed. (CPU, float32)

Chapters 03, 04, 06, 07, 11, 13 and 14 train toy models and assert what they show: MoE and dense end close together at
equal active parameters, balancing evens the experts' load, a model with vision beats its blind twin on every task, a
distilled student beats the same student on hard labels, iRoPE holds its loss past the training length where RoPE
does not, MetaP keeps the best learning rate in place as the model widens, FP8 training with scales tracks float32,
int4 and FP8 experts leave the chat model's answers in place. A learner's machine runs torch with its own thread
count, and a sum split over more threads rounds differently: a few hundred training steps turn that into a different
model. A claim is only worth asserting with a margin below the worst case over thread counts and seeds.

For every claim group, thread count and seed this script runs, in its own process with
`torch.set_num_threads(threads)`, the notebook cells the group's claims come from, with the seed passed to every
recipe, and records the notebook's variables and the quantities the claims are about:

    moe      chapter 03, cells 24, 27 and 35-36: mini-scout vs mini-dense, final validation losses; mini-scout's
             expert load split by domain
    balance  chapter 03, cells 54 and 58: no balancing vs the Switch loss vs the aux-loss-free bias (imbalance, loss)
    vlm      chapter 06, cells 36-40: mini-vlm vs mini-vlm-blind, exact-match accuracy per task on 600 test examples,
             the blind model's held-out history
    distill  chapter 07, cells 4-34: the teacher mini-behemoth and mini-scout on the students' windows, the T^2 factor,
             the live loop, hard-label / distilled / codistilled students from one initialisation
    needle   chapter 04, cells 56-65: RoPE / NoPE / iRoPE trained on 64 tokens, loss by position and the passkey up
             to 512 tokens. The notebook trains these at one thread (cell 58) and so does this script: its runs at 2
             and 4 threads repeat the 1-thread run, and the claim test checks that they do.
    metap    chapter 13, cells 20-21 and 28-34: the coordinate check's slopes, the learning-rate sweep's optima
    fp8      chapter 14, cells 48-51: mini-Scout trained in float32, bf16, FP8 with and without scales
    quant    chapter 11, cells 58-60 and chapter 14, cells 37-38: the post-trained chat model (the seed's whole
             post-training pipeline) with int4 experts at every group size and scale kind, and with FP8 experts

Seed 0 is the course's recipe. Seed s trains the toy models with seed s (`zoo.pretrained(..., seed=s)`,
`shapes.pretrained_vlm(..., seed=s)`, `needle_train_config(..., seed=s)`, `balancing_comparison(..., seed=s)`,
`lr_sweep(..., seed=s)` and `coord_check(..., seed=s)`, `training_comparison(..., seed=s)`, and `int4_quality(...,
seed=s)` and `quality_comparison(..., seed=s)`, which read `posttrain.stage(..., seed=s)`); chapter 07's students
start from seed 1 and see batches from seed 1 (`student_train_config`), so here they use seed 1 + s. The evaluation
sets the notebooks fix (the 600 shape questions, the needle windows and sequences, the 300 held-out questions) stay
fixed. Runs at seed 0 fill the cache the notebooks read at that thread count.

`tests/test_model_claims.py` checks every claim the notebooks assert, in every recorded run.

Run
---
    nice python bench/model_claims_spread.py                         # ci, every group, threads 1 2 4, seeds 0 1 2
    nice python bench/model_claims_spread.py --claims moe vlm --jobs 2
    nice python bench/model_claims_spread.py --claims quant metap --threads 1 2   # the two costliest groups
    python bench/model_claims_spread.py --table                       # the table of the runs recorded so far

Runs are appended to the JSON file (default bench/results/model_claims_spread_<profile>.json) as they finish; a run
already recorded for the same code and machine is not repeated, so an interrupted sweep continues where it stopped.
The code is tracked per group: a change to one group's modules drops that group's runs only. A record holds one
machine's runs: on another machine, pass --json bench/results/model_claims_spread_<profile>_<machine>.json, and the
test reads every record of the profile, counting only runs of the current code.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from minillama4 import Llama4, Llama4Config
from minillama4.balancing import load_imbalance
from minillama4.course import (balancing_experiments, fp8_experiments, int4_experiments, long_context,
                               metap_experiments, shapes, viz, zoo)
from minillama4.course.cachekey import runtime, source_hash
from minillama4.course.data import DOMAINS, course_tokens
from minillama4.course.profile import by_profile
from minillama4.losses import distillation_loss
from minillama4.train import distill as distillation
from minillama4.train import evaluate, seed_everything
from spread import open_record, print_table, run_child, sweep  # bench/spread.py, next to this script

CODE = {  # what each group runs (and everything it imports): a group's runs are kept while its code is unchanged
    "moe": ("minillama4.course.zoo", "minillama4.course.viz"), "balance": ("minillama4.course.balancing_experiments",),
    "vlm": ("minillama4.course.shapes",), "distill": ("minillama4.course.zoo", "minillama4.train.distill"),
    "needle": ("minillama4.course.long_context",), "metap": ("minillama4.course.metap_experiments",),
    "fp8": ("minillama4.course.fp8_experiments",), "quant": ("minillama4.course.int4_experiments",)}
VLM_TEST_EXAMPLES = 600  # chapter 06, cell 40
TRAIN_LEN, CHUNK, MULTS = 64, 32, (1, 2, 4, 8)  # chapter 04, cell 56
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)  # chapter 04, cell 64
NEEDLE_WINDOWS = 28  # chapter 04, cell 60


# ------------------------------------------------------------------------------------------------- the groups
def moe(profile: str, seed: int) -> dict:
    """Chapter 03, cells 24 and 27 (dense vs MoE) and 35-36 (expert load split by domain)."""
    moe_model, moe_hist = zoo.pretrained("mini-scout", profile, verbose=False, seed=seed)
    _, dense_hist = zoo.pretrained("mini-dense", profile, verbose=False, seed=seed)
    moe_val, dense_val = moe_hist.val_loss[-1], dense_hist.val_loss[-1]
    cfg = moe_model.config
    val = course_tokens("val", vocab_size=cfg.vocab_size)
    T_win, n_win = 128, 16
    load_by_domain = np.zeros((len(cfg.moe_layers), len(DOMAINS), cfg.num_local_experts))  # [L, domains, E]
    with torch.no_grad():
        for d in range(len(DOMAINS)):
            pos = (val.domain == d).nonzero().flatten()
            _, routing = moe_model(val.ids[pos[: n_win * T_win]].view(n_win, T_win), return_routing=True)
            load_by_domain[:, d] = viz.routing_load(routing)
    return {"moe_val": moe_val, "dense_val": dense_val, "moe_dense_gap": dense_val - moe_val,
            "same_eval_steps": moe_hist.eval_steps == dense_hist.eval_steps,
            "domain_max_share": float(load_by_domain.max())}


def balance(profile: str, seed: int) -> dict:
    """Chapter 03, cells 54 and 58: no balancing vs the Switch loss vs the aux-loss-free bias."""
    runs = balancing_experiments.balancing_comparison(profile, seed=seed)["variants"]
    imb = {name: load_imbalance(r["loads"]).numpy() for name, r in runs.items()}  # [evaluations, MoE layers]
    final = {name: float(v[-1].mean()) for name, v in imb.items()}
    late = {name: float(v[len(v) // 2:].mean()) for name, v in imb.items()}
    val_final = {name: r["evals"][-1][1] for name, r in runs.items()}
    short = dict(zip(runs, ("none", "switch", "auxfree")))
    return {**{f"final_{short[n]}": v for n, v in final.items()}, **{f"late_{short[n]}": v for n, v in late.items()},
            **{f"val_{short[n]}": v for n, v in val_final.items()},
            "none_final_max": float(imb["no balancing"][-1].max()),
            "val_spread": max(val_final.values()) - min(val_final.values())}


def metap(profile: str, seed: int) -> dict:
    """Chapter 13, cells 20-21 (the coordinate check) and 28-34 (the learning-rate sweep across width and depth)."""
    coords = {p: metap_experiments.coord_check(p, seed=seed) for p in ("standard", "metap")}
    sweep = metap_experiments.lr_sweep(profile, progress=False, seed=seed)
    best = metap_experiments.best_lrs(sweep)
    depths = sweep["spec"]["depths"]
    slopes = {p: {w: coords[p]["slope"][w] for w in ("delta", "rms")} for p in coords}
    return {"metap_max_abs_slope": max(abs(x) for w in ("delta", "rms") for x in slopes["metap"][w].values()),
            "standard_min_delta_slope": min(slopes["standard"]["delta"].values()),
            "metap_spread": max(best["metap", d]["spread"] for d in depths),
            "standard_min_drop": min(best["standard", d]["index"][0] - best["standard", d]["index"][-1]
                                     for d in depths),
            "widest_metap_minus_standard": max(best["metap", d]["loss"][-1] - best["standard", d]["loss"][-1]
                                               for d in depths),
            "depth_moves": max(abs(a - b) for a, b in zip(*(best["metap", d]["index"] for d in depths))),
            "n_lrs": len(sweep["spec"]["lrs"]), "depths": depths, "slopes": slopes,
            "best": {f"{p} L{d}": b for (p, d), b in best.items()}}


def fp8(profile: str, seed: int) -> dict:
    """Chapter 14, cells 48-51: mini-Scout from scratch in float32, bf16, FP8 with and without scales."""
    run = fp8_experiments.training_comparison(profile, progress=False, seed=seed)
    gaps = fp8_experiments.final_gaps(run)
    fs, fu = run["variants"]["fp8"]["fp8_stats"], run["variants"]["fp8 unscaled"]["fp8_stats"]
    return {"gap_bf16": gaps["bf16"], "gap_fp8": gaps["fp8"], "gap_unscaled": gaps["fp8 unscaled"],
            "grad_underflow_scaled": fs["grad"]["underflow"], "grad_underflow_unscaled": fu["grad"]["underflow"],
            "max_overflow": max(f[k]["overflow"] for f in (fs, fu) for k in f), "gaps": gaps}


def vlm(profile: str, seed: int) -> dict:
    """Chapter 06, cells 38 and 40."""
    model, _ = shapes.pretrained_vlm("mini-vlm", profile, verbose=False, seed=seed)
    blind, hist_blind = shapes.pretrained_vlm("mini-vlm-blind", profile, verbose=False, seed=seed)
    test = shapes.make_examples(VLM_TEST_EXAMPLES, seed=123)
    acc = shapes.accuracy(model, test)
    acc_blind = shapes.accuracy(blind, test, see_images=False)
    mean = lambda a: sum(a.values()) / len(a)  # noqa: E731  (as in the cell)
    return {**{f"vision_{t}": acc[t] for t in shapes.TASKS}, **{f"blind_{t}": acc_blind[t] for t in shapes.TASKS},
            "mean_vision": mean(acc), "mean_blind": mean(acc_blind), "mean_gap": mean(acc) - mean(acc_blind),
            "blind_history_max_dev": max(abs(a - shapes.CHANCE[t]) for t in shapes.TASKS
                                         for a in hist_blind.accuracy[t]),
            "vision": acc, "blind": acc_blind, "chance": shapes.CHANCE, "blind_history": hist_blind.accuracy}


def distill(profile: str, seed: int) -> dict:
    """Chapter 07: cells 4, 7 and 9 (the models on the students' windows), 14 and 18 (the T^2 factor), 25 and 27
    (the live loop, as the package's `distill`, which cell 27 checks it equals), 29-31 (hard labels vs distilled)
    and 34 (codistillation)."""
    recipes = zoo.recipes(profile, seed)
    s_cfg = recipes["mini-scout"].config
    tc = replace(distillation.student_train_config(profile), seed=1 + seed)
    kd = distillation.DistillConfig()
    teacher, _ = zoo.pretrained("mini-behemoth", profile, verbose=False, seed=seed)
    scout, _ = zoo.pretrained("mini-scout", profile, verbose=False, seed=seed)
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    scout_same, teacher_same = evaluate(scout, val_ids, tc)[0], evaluate(teacher, val_ids, tc)[0]

    # cells 14 and 18 (cell 14's student0 and cell 25's init are the same seeded initialisation)
    x_BT = torch.stack([train_ids[i:i + 32] for i in (0, 5000, 9000)])
    y_BT = torch.stack([train_ids[i + 1:i + 33] for i in (0, 5000, 9000)])
    y_BT[0, :8] = -100
    seed_everything(1 + seed)
    init = Llama4(s_cfg)
    with torch.no_grad():
        v_BTV, z_BTV = teacher(x_BT), init(x_BT)
    Ts = [1.0, 2.0, 4.0, 8.0, 16.0]
    scaled = []
    for T_ in Ts:
        z = z_BTV.clone().requires_grad_(True)
        distillation_loss(z, v_BTV, y_BT, T_, 1.0).backward()
        scaled.append(z.grad.norm().item())
    raw = [g / T_**2 for g, T_ in zip(scaled, Ts)]

    live = by_profile(ci=30, laptop=60, profile=profile)  # cell 25
    tc_live = replace(tc, steps=live, warmup_steps=live // 10, eval_every=live)
    h_live = distillation.distill(copy.deepcopy(init), teacher, train_ids, val_ids, tc_live, kd, progress=False)

    hard = distillation.distill(copy.deepcopy(init), None, train_ids, val_ids, tc, progress=False)  # cell 29
    dist = distillation.distill(copy.deepcopy(init), teacher, train_ids, val_ids, tc, kd, progress=False)
    gain = hard.val_loss[-1] - dist.val_loss[-1]  # cell 30
    caught_up = next((s for s, v in zip(dist.eval_steps, dist.val_loss) if v <= hard.val_loss[-1]), None)
    half = tc.steps // 2  # cell 31
    ce_hard, ce_dist = (sum(h.train_loss[half:]) / (tc.steps - half) for h in (hard, dist))

    t_rec = recipes["mini-behemoth"].train  # cell 34
    teacher_tc = replace(tc, lr=t_rec.min_lr, min_lr=t_rec.min_lr, warmup_steps=0)
    co = distillation.distill(copy.deepcopy(init), copy.deepcopy(teacher), train_ids, val_ids, tc, kd, codistill=True,
                              teacher_cfg=teacher_tc, progress=False)
    return {"scout_same": scout_same, "teacher_same": teacher_same, "scout_ahead": teacher_same - scout_same,
            "temperatures": Ts, "grad_norms": scaled,
            "t2_spread": max(scaled[2:]) / min(scaled[2:]), "kl_alone_ratio": raw[0] / raw[-1],
            "live_ce": [h_live.train_loss[0], h_live.train_loss[-1]],
            "live_soft": [h_live.soft_loss[0], h_live.soft_loss[-1]],
            "live_ce_drop": h_live.train_loss[0] - h_live.train_loss[-1],
            "live_soft_drop": h_live.soft_loss[0] - h_live.soft_loss[-1],
            "steps": tc.steps, "hard_final": hard.val_loss[-1], "dist_final": dist.val_loss[-1], "gain": gain,
            "caught_up": caught_up, "caught_up_frac": None if caught_up is None else caught_up / tc.steps,
            "teacher_ahead": dist.val_loss[-1] - teacher_same, "ce_hard": ce_hard, "ce_dist": ce_dist,
            "ce_gain": ce_hard - ce_dist, "co_final": co.val_loss[-1], "co_gain": hard.val_loss[-1] - co.val_loss[-1],
            "co_teacher_final": co.teacher_val_loss[-1]}


def needle(profile: str, seed: int) -> dict:
    """Chapter 04, cells 56-65."""
    torch.set_num_threads(1)  # cell 58: the notebook trains and evaluates these at one thread
    base = Llama4Config.preset("toy").replace(hidden_size=64, head_dim=16, moe_layers=[], intermediate_size_mlp=256)
    variants = long_context.position_variants(base, chunk_size=CHUNK)
    val_ids = course_tokens("val").ids
    task = long_context.NeedleTask.for_course_tokenizer(course_tokens("train").ids, key_len=2)
    val_task = long_context.NeedleTask.for_course_tokenizer(val_ids, key_len=2)
    tc = long_context.needle_train_config(TRAIN_LEN, profile, seed=seed)
    models = {name: long_context.train_needle(c, task, tc)[0] for name, c in variants.items()}

    eval_len = MULTS[-1] * TRAIN_LEN  # cells 60 and 61
    loss_pos = {name: long_context.loss_by_position(m, val_ids, eval_len, n_windows=NEEDLE_WINDOWS)
                for name, m in models.items()}
    inside = {name: lp[TRAIN_LEN // 2:TRAIN_LEN].mean().item() for name, lp in loss_pos.items()}
    beyond = {name: lp[2 * TRAIN_LEN:].mean().item() for name, lp in loss_pos.items()}

    n_seq = by_profile(ci=12, laptop=40, profile=profile)  # cells 64 and 65
    acc = {name: np.array([[long_context.retrieval_accuracy(m, val_task, k * TRAIN_LEN, n_sequences=n_seq, depth=d,
                                                            seed=100 + j)
                            for k in MULTS] for j, d in enumerate(DEPTHS)]) for name, m in models.items()}
    by_len = {name: a.mean(0).tolist() for name, a in acc.items()}
    learned = min(by_len["RoPE"][0], by_len["iRoPE"][0]) >= 0.9
    return {"threads_used": torch.get_num_threads(),
            **{f"inside_{n}": inside[n] for n in variants}, **{f"beyond_{n}": beyond[n] for n in variants},
            "rope_rise": beyond["RoPE"] - inside["RoPE"], "irope_rise": beyond["iRoPE"] - inside["iRoPE"],
            "irope_vs_rope": beyond["RoPE"] - beyond["iRoPE"], "nope_vs_irope": inside["NoPE"] - inside["iRoPE"],
            **{f"passkey_{n}_{k * TRAIN_LEN}": by_len[n][i] for n in variants for i, k in enumerate(MULTS)},
            "learned": learned, "inside": inside, "beyond": beyond, "by_len": by_len}


def quant(profile: str, seed: int) -> dict:
    """Chapter 11, cells 58-60 (int4 at every group size, symmetric and asymmetric, on the post-trained chat model)
    and chapter 14, cells 37-38 (float32 vs FP8 vs int4 experts). Trains the seed's post-training pipeline (and its
    base model) first if it is not cached."""
    sweep = int4_experiments.int4_quality(profile, progress=False, seed=seed)
    settings, runs = int4_experiments.variants(), sweep["variants"]
    f32 = runs["float32"]
    int4_runs = {n: r for n, r in runs.items() if settings[n] is not None}
    V = fp8_experiments.quality_comparison(profile, progress=False, seed=seed)["variants"]
    return {"f32_accuracy": f32["accuracy"],
            "int4_max_accuracy_change": max(abs(r["accuracy"] - f32["accuracy"]) for r in int4_runs.values()),
            "int4_max_ppl_change": max(abs(r["val_perplexity"] / f32["val_perplexity"] - 1)
                                       for r in int4_runs.values()),
            "int4_min_same_replies": min(r["same_replies"] for r in int4_runs.values()),
            "int4_min_kl": min(r["kl"] for r in int4_runs.values()),
            "fp8_accuracy_change": V["fp8"]["accuracy"] - V["float32"]["accuracy"],
            "int4_accuracy_change": V["int4"]["accuracy"] - V["float32"]["accuracy"],
            "fp8_logit_rel_rms": V["fp8"]["logit_rel_rms"], "int4_logit_rel_rms": V["int4"]["logit_rel_rms"],
            "questions": sweep["questions"], "group_sizes": list(int4_experiments.GROUP_SIZES),
            "kl": {n: r["kl"] for n, r in int4_runs.items()}, "fp8_vs_int4": V}


GROUPS = {"moe": moe, "balance": balance, "vlm": vlm, "distill": distill, "needle": needle, "metap": metap,
          "fp8": fp8, "quant": quant}
TABLE = {  # the scalar quantities printed per group
    "moe": ["moe_val", "dense_val", "moe_dense_gap", "domain_max_share"],
    "balance": [f"{k}_{n}" for k in ("final", "late", "val") for n in ("none", "switch", "auxfree")] +
               ["none_final_max", "val_spread"],
    "metap": ["metap_max_abs_slope", "standard_min_delta_slope", "metap_spread", "standard_min_drop",
              "widest_metap_minus_standard", "depth_moves"],
    "fp8": ["gap_bf16", "gap_fp8", "gap_unscaled", "grad_underflow_scaled", "grad_underflow_unscaled",
            "max_overflow"],
    "quant": ["f32_accuracy", "int4_max_accuracy_change", "int4_max_ppl_change", "int4_min_same_replies",
              "int4_min_kl", "fp8_accuracy_change", "int4_accuracy_change", "fp8_logit_rel_rms", "int4_logit_rel_rms"],
    "vlm": [f"{k}_{t}" for k in ("vision", "blind") for t in shapes.TASKS] +
           ["mean_vision", "mean_blind", "mean_gap", "blind_history_max_dev"],
    "distill": ["scout_same", "teacher_same", "scout_ahead", "t2_spread", "kl_alone_ratio", "live_ce_drop",
                "live_soft_drop", "hard_final", "dist_final", "gain", "caught_up_frac", "teacher_ahead", "ce_gain",
                "co_final", "co_gain"],
    "needle": [f"{k}_{n}" for k in ("inside", "beyond") for n in ("RoPE", "NoPE", "iRoPE")] +
              ["rope_rise", "irope_rise", "irope_vs_rope", "nope_vs_irope"] +
              [f"passkey_{n}_{k * TRAIN_LEN}" for n in ("RoPE", "NoPE", "iRoPE") for k in MULTS] + ["learned"],
}


def smoke_scale() -> None:
    """A few steps of everything and small evaluation sets: checks that every quantity comes out, nothing more."""
    global VLM_TEST_EXAMPLES, NEEDLE_WINDOWS
    VLM_TEST_EXAMPLES, NEEDLE_WINDOWS = 12, 2
    few = dict(steps=4, warmup_steps=1, eval_every=2)
    zoo_recipes, vlm_recipes, student_config, needle_config = (
        zoo.recipes, shapes.recipes, distillation.student_train_config, long_context.needle_train_config)
    zoo.recipes = lambda profile=None, seed=0: {
        n: replace(r, train=replace(r.train, **few, eval_batches=1)) for n, r in zoo_recipes(profile, seed).items()}
    shapes.recipes = lambda profile=None, seed=0: {
        n: (c, replace(t, **few, eval_examples=6)) for n, (c, t) in vlm_recipes(profile, seed).items()}
    distillation.student_train_config = lambda profile=None: replace(student_config(profile), steps=10, warmup_steps=1,
                                                                     eval_every=2, eval_batches=1)
    long_context.needle_train_config = lambda *a, **k: replace(needle_config(*a, **k), steps=4)
    balance_setup, fp8_setup = balancing_experiments.experiment_setup, fp8_experiments.training_setup
    metap_spec, coords = metap_experiments.sweep_spec, metap_experiments.coord_check
    balancing_experiments.experiment_setup = lambda *a: (lambda c, t: (c, replace(t, **few, eval_batches=1)))(
        *balance_setup(*a))
    fp8_experiments.training_setup = lambda *a: (lambda c, t: (c, replace(t, **few, eval_batches=1)))(*fp8_setup(*a))
    metap_experiments.sweep_spec = lambda *a: replace(metap_spec(*a), widths=(16, 32), steps=4, warmup_steps=1,
                                                      eval_batches=1)
    metap_experiments.coord_check = lambda p, **k: coords(p, widths=(16, 32), steps=2, **k)


# ------------------------------------------------------------------------------------------------- the sweep
def print_record(record: dict) -> None:
    m = record["machine"]
    print(f"profile {record['profile']}: {len(record['runs'])} runs on {m['cpu']} ({m['cores']} cores), torch "
          f"{m['torch']}, {m['cpu_kernels']} kernels")
    for group, quantities in TABLE.items():
        runs = [r for r in record["runs"] if r["group"] == group]
        if runs:
            print(f"\n{group}")
            print_table(runs, quantities + ["cpu_seconds"])
    if not record["runs"]:
        print("no runs recorded yet")
    print("\n(tests/test_model_claims.py checks the notebooks' claims on every recorded run)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="ci", choices=["ci", "laptop"])
    ap.add_argument("--claims", nargs="+", default=list(GROUPS), choices=list(GROUPS), help="the groups to run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with its own thread count)")
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/model_claims_spread_<profile>.json")
    ap.add_argument("--table", action="store_true", help="only print the table of the runs recorded so far")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", type=int, nargs=2, metavar=("THREADS", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        torch.set_num_threads(args.child[0])
        if args.smoke:
            smoke_scale()
        (group,) = args.claims
        values = GROUPS[group](args.profile, args.child[1])
        print(json.dumps({**values, "cpu_seconds": time.process_time()}))  # this process, all its threads
        return
    if args.smoke and args.json is None:
        ap.error("--smoke needs --json: smoke runs stay out of bench/results")

    path = args.json or Path(__file__).parent / "results" / f"model_claims_spread_{args.profile}.json"
    record = open_record(path, args.profile, {g: source_hash(*m) + ("+smoke" if args.smoke else "")
                                              for g, m in CODE.items()})
    if not args.table:
        done = {(r["group"], r["threads"], r["seed"]) for r in record["runs"]}
        todo = [(g, t, s) for g in args.claims for s in args.seeds for t in args.threads if (g, t, s) not in done]
        extra = ["--smoke"] if args.smoke else []

        def run(group: str, threads: int, seed: int) -> dict:
            return {"group": group, **run_child(__file__, args.profile, threads, seed, "--claims", group, *extra)}

        sweep(record, path, todo, run, args.jobs)
    print_record(record)
    print(f"\n(runtime of this process: {runtime()}; recorded in {path})")


if __name__ == "__main__":
    main()
