"""How much the course's post-training claims move with torch's thread count and the seed. (CPU, float32)

The tests (`tests/test_posttrain.py`) and notebooks 08–10 assert claims about the post-training pipeline: SFT raises
held-out accuracy over the base model, RL raises it further (on the harder prompts too), DPO raises the house-format
rate without costing accuracy, dropping zero-advantage groups trains on fewer tokens and refilling the batch at least
matches keeping every group. A learner's machine runs torch with its own thread count, and a sum split over more
threads rounds differently: a few hundred training steps turn that into a different model. A claim is only worth
asserting with a margin below the worst case over thread counts and seeds.

For every (threads, seed) this script runs, in its own process with `torch.set_num_threads(threads)`, the whole
pipeline of the profile with that seed (`posttrain.run(profile, seed=seed)`: the base model's pretraining, SFT, RL,
DPO) and the dropping ablation (`posttrain.rl_ablation`), reads the quantities the claims are about, and prints one
column per run and the min / max of each quantity. The JSON file keeps each run's report and ablation table too:
`tests/test_posttrain.py` checks that every claim it asserts holds in every recorded run. Seed 0 is the course's
recipe, so its runs also fill the cache the tests and notebooks read at that thread count.

Run
---
    nice python bench/claims_spread.py                           # ci, threads 1 2 4, seeds 0 1 2
    nice python bench/claims_spread.py --jobs 3                  # three runs at a time
    python bench/claims_spread.py --profile laptop --threads 1 2 --seeds 0
    python bench/claims_spread.py --table                         # print the table of the runs recorded so far

Runs are appended to the JSON file (default bench/results/claims_spread_<profile>.json) as they finish; a run already
recorded for the same code and machine is not repeated, so an interrupted sweep continues where it stopped. A record
holds one machine's runs: give another machine its own file (`--json bench/results/claims_spread_ci_xeon.json`); the
claims test reads every `claims_spread_<profile>*.json` and counts the runs stamped with the current code's hash.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from minillama4.course.cachekey import runtime, source_hash
from spread import open_record, print_table, run_child, sweep  # bench/spread.py, next to this script

TABLE = ["base_accuracy", "sft_accuracy", "rl_accuracy", "dpo_accuracy", "sft_hard", "rl_hard", "rl_format",
         "dpo_format", "sft_gain", "rl_gain", "rl_hard_gain", "dpo_format_gain", "dpo_accuracy_change",
         "dpo_pref_gain", "dpo_pref_final", "dpo_margin_final", "rl_frac_dropped", "keep_frac_informative",
         "drop_tokens_ratio", "refill_groups_ratio", "refill_vs_keep", "refill_accuracy", "drop_accuracy",
         "keep_accuracy", "cpu_seconds_sft", "cpu_seconds_rl", "cpu_seconds_dpo"]


def measure(profile: str, seed: int) -> dict:
    """Every quantity a claim is about, from one run of the pipeline and the ablation (in this process)."""
    from minillama4.train import posttrain

    report = posttrain.run(profile, progress=False, seed=seed)
    rows = {r["variant"]: r for r in posttrain.ablation_table(posttrain.rl_ablation(profile, False, seed))}
    st = {s["name"]: s for s in report["stages"]}
    hard = {n: posttrain.harder_accuracy(s) for n, s in st.items()}
    refill, drop, keep = rows["drop + refill"], rows["drop"], rows["keep all"]
    return {
        **{f"{n}_accuracy": st[n]["accuracy"] for n in posttrain.STAGES},
        **{f"{n}_format": st[n]["format_rate"] for n in posttrain.STAGES},
        "sft_hard": hard["sft"], "rl_hard": hard["rl"],
        "sft_gain": st["sft"]["accuracy"] - st["base"]["accuracy"],
        "rl_gain": st["rl"]["accuracy"] - st["sft"]["accuracy"],
        "rl_hard_gain": hard["rl"] - hard["sft"],
        "dpo_format_gain": st["dpo"]["format_rate"] - st["rl"]["format_rate"],
        "dpo_accuracy_change": st["dpo"]["accuracy"] - st["rl"]["accuracy"],
        "dpo_pref_gain": st["dpo"]["heldout_pref_accuracy"] - st["dpo"]["heldout_pref_accuracy_start"],
        "dpo_pref_final": st["dpo"]["heldout_pref_accuracy"],
        "dpo_margin_final": st["dpo"]["final_margin"],
        "rl_frac_dropped": st["rl"]["mean_frac_dropped"],
        "keep_frac_informative": keep["frac_trained_informative"],
        "drop_tokens_ratio": drop["tokens_trained"] / keep["tokens_trained"],
        "refill_groups_ratio": refill["groups_sampled"] / keep["groups_sampled"],
        "refill_vs_keep": refill["accuracy"] - keep["accuracy"],
        "refill_accuracy": refill["accuracy"], "drop_accuracy": drop["accuracy"], "keep_accuracy": keep["accuracy"],
        **{f"cpu_seconds_{n}": st[n]["cpu_seconds"] for n in ("sft", "rl", "dpo")},
        "stages": report["stages"], "ablation": list(rows.values()),  # what the claim tests read
    }


def print_record(record: dict) -> None:
    runs = record["runs"]
    if not runs:
        print("no runs recorded yet")
        return
    m = record["machine"]
    print(f"profile {record['profile']}: {len(runs)} runs on {m['cpu']} ({m['cores']} cores), torch {m['torch']}, "
          f"{m['cpu_kernels']} kernels\n")
    print_table(runs, TABLE)
    print("\n(tests/test_posttrain.py::test_the_asserted_claims_hold_in_every_measured_run checks the claims on them)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="ci", choices=["ci", "laptop"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with its own thread count)")
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/claims_spread_<profile>.json")
    ap.add_argument("--table", action="store_true", help="only print the table of the runs recorded so far")
    ap.add_argument("--child", type=int, nargs=2, metavar=("THREADS", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        torch.set_num_threads(args.child[0])
        print(json.dumps(measure(args.profile, args.child[1])))
        return

    path = args.json or Path(__file__).parent / "results" / f"claims_spread_{args.profile}.json"
    record = open_record(path, args.profile, source_hash("minillama4.train.posttrain"))
    if not args.table:
        done = {(r["threads"], r["seed"]) for r in record["runs"]}
        todo = [(t, s) for s in args.seeds for t in args.threads if (t, s) not in done]
        sweep(record, path, todo, lambda t, s: run_child(__file__, args.profile, t, s), args.jobs)
    print_record(record)
    print(f"\n(runtime of this process: {runtime()}; recorded in {path})")


if __name__ == "__main__":
    main()
