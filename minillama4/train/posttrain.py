"""The post-training pipeline, Llama 4's order: base → lightweight SFT → online RL → lightweight DPO.

    report = run(profile="ci", out="runs/ci")     # or: minillama4 posttrain --profile ci --out runs/ci
    model, history = stage("rl")                  # a finished stage, trained once and cached (like zoo.pretrained)
    ablation = rl_ablation()                      # RL again from the same SFT model: drop + refill / drop / keep all

Every stage is evaluated greedily on the same held-out questions (`tasks.eval_set`): accuracy (the answer is right)
and format rate (the reply is exactly `The answer is N.`), overall and per level. `report.json` holds one entry per
stage; plots of the curves and the report card are written next to it.

Stages are cached in `cache_dir()/posttrain/` under a key (`cachekey.cache_key`) of the base model, the configs of that
stage and every stage before it, the post-training code and the runtime (torch version, thread count): changing the
DPO settings reuses the SFT and RL models; changing the code of any stage trains them again.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..checkpoint import from_pretrained, save_pretrained
from ..course.cachekey import cache_key
from ..course.data import cache_dir, course_tokenizer
from ..course.profile import by_profile, current_profile
from ..course.tasks import eval_set
from .dpo import DPOConfig, train_dpo
from .rl import RLConfig, train_rl
from .rollout import evaluate
from .sft import SFTConfig, train_sft

STAGES = ("base", "sft", "rl", "dpo")


@dataclass(frozen=True)
class PosttrainRecipe:
    base: str  # the pretrained toy model (zoo name) post-training starts from
    sft: SFTConfig
    rl: RLConfig
    dpo: DPOConfig
    eval_per_level: int  # held-out questions per skill and level
    seed: int = 0  # seeds the base model's pretraining and every stage (0 in the course)


def recipe(profile: str | None = None, seed: int = 0) -> PosttrainRecipe:
    """The pipeline's settings, scaled by the profile. `bench/claims_spread.py` runs seeds other than 0 to measure how
    much each result owes to the seed."""
    p = profile or current_profile()
    # Llama 4's balance: a lightweight SFT and a heavier online RL stage on harder and harder prompts, which has
    # something left to learn (seed 0: laptop SFT 71% held-out accuracy, RL 95%; ci 80%, RL 90%). With 400 SFT steps
    # (on an earlier base model) SFT alone reached 99% and RL dropped 98% of its groups: nothing was left to do. ci
    # needs 250 SFT steps to end its climb: at 150 it stopped mid-climb, and the same recipe gave 47% or 68% depending
    # on the CPU's floating-point paths, with RL and DPO unstable on the 47%.
    # RL: 16 prompts a step, refilled up to 4 sampling rounds (DAPO's dynamic sampling). The KL weight is high
    # (0.3): at 0.02 the policy collapsed onto one reply style within 30 steps, a choice the reward does not see,
    # which left DPO almost no house-style samples to build pairs from (and broke it: 0.72 → 0.39 accuracy in ci).
    # DPO is light: nearly all its pairs are about the house format, which it learns within 20 steps; past that it
    # over-optimises the preference and loses accuracy (laptop, 80 steps: 0.97 at step 20, then 0.87, 0.89, 0.81).
    sft_steps = by_profile(ci=250, laptop=150, profile=p)
    rl_steps = by_profile(ci=30, laptop=60, profile=p)
    dpo_steps = by_profile(ci=40, laptop=20, profile=p)
    return PosttrainRecipe(
        base="mini-scout",
        sft=SFTConfig(steps=sft_steps, batch_size=32, lr=3e-3, warmup_steps=min(20, sft_steps // 5),
                      pool_size=by_profile(ci=3000, laptop=8000, profile=p), keep_fraction=0.5,
                      judge_at=sft_steps // 3,
                      canonical_fraction=0.2, eval_every=max(25, sft_steps // 6), seed=seed),
        rl=RLConfig(steps=rl_steps, prompts_per_step=16, group_size=8, lr=5e-4, kl_coef=0.3, ppo_epochs=2,
                    max_rounds=4, eval_every=10, seed=seed),
        dpo=DPOConfig(steps=dpo_steps, pairs_per_step=16, pool_prompts=by_profile(ci=160, laptop=320, profile=p),
                      beta=0.1, lr=1e-4, nll_coef=0.2, eval_every=max(10, dpo_steps // 4), seed=seed),
        eval_per_level=50,
        seed=seed,
    )


def _stage_key(r: PosttrainRecipe, name: str, base_path: Path, profile: str) -> str:
    """Key of a stage: the base model, the eval set size, the configs up to and including this stage, the code of the
    pipeline (this module and everything it imports) and the runtime."""
    upto = STAGES[:STAGES.index(name) + 1]
    payload = {"base": base_path.name, "profile": profile, "eval_per_level": r.eval_per_level}
    payload.update({s: asdict(getattr(r, s)) for s in upto if s != "base"})
    return cache_key(payload, __name__)


def _base_path(r: PosttrainRecipe, profile: str) -> Path:
    from ..course import zoo

    return zoo.pretrained_path(r.base, profile, seed=r.seed)  # trains it once if it is not cached yet


def stage(name: str, profile: str | None = None, progress: bool = True, seed: int = 0):
    """(model, record) of a finished stage, trained on first use (with every stage before it) and then cached.
    record = {"metrics": held-out evaluation, "history": the stage's training curves, "cpu_seconds": …}."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    profile = profile or current_profile()
    r = recipe(profile, seed)
    tok = course_tokenizer()
    evals = eval_set(r.eval_per_level)
    base_path = _base_path(r, profile)
    if name == "base":
        path = cache_dir() / "posttrain" / f"base-{profile}-{_stage_key(r, 'base', base_path, profile)}"
        path.mkdir(parents=True, exist_ok=True)
        rec_file = path / "record.json"
        if not rec_file.is_file():
            model = from_pretrained(base_path, dtype=torch.float32).eval()
            t0 = time.process_time()
            metrics = evaluate(model, tok, evals)
            rec_file.write_text(json.dumps({"metrics": metrics, "history": {}, "cpu_seconds": time.process_time() - t0}))
        return from_pretrained(base_path, dtype=torch.float32).eval(), json.loads(rec_file.read_text())

    path = cache_dir() / "posttrain" / f"{name}-{profile}-{_stage_key(r, name, base_path, profile)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes asking at once: one trains, the other waits and loads
        if not (path / "record.json").is_file():
            prev = STAGES[STAGES.index(name) - 1]
            model, _ = stage(prev, profile, progress, seed)
            t0 = time.process_time()
            if name == "sft":
                hist = train_sft(model, tok, r.sft, evals, progress=progress, desc="sft")
            elif name == "rl":
                hist = train_rl(model, tok, r.rl, evals, progress=progress, desc="rl")
            else:
                hist = train_dpo(model, tok, r.dpo, evals, progress=progress, desc="dpo")
            metrics = evaluate(model, tok, evals)
            record = {"metrics": metrics, "history": hist.to_dict(), "cpu_seconds": time.process_time() - t0}
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            save_pretrained(model, tmp)
            (tmp / "record.json").write_text(json.dumps(record))
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
    model = from_pretrained(path, dtype=torch.float32).eval()
    return model, json.loads((path / "record.json").read_text())


# ------------------------------------------------------------------------------------------------ the dropping ablation
ABLATION_VARIANTS = {  # RLConfig changes from the recipe's RL stage (which drops and refills)
    "drop + refill": {},
    "drop": {"max_rounds": 1},
    "keep all": {"drop_zero_advantage": False, "max_rounds": 1},
}


def rl_ablation(profile: str | None = None, progress: bool = True, seed: int = 0) -> dict:
    """What dropping zero-advantage groups does: RL from the same SFT model, with the same seed and the same number of
    update steps, in three variants (ABLATION_VARIANTS): the recipe's (drop them and sample more prompts to refill the
    batch, DAPO's dynamic sampling), drop them without refilling, and keep every group. The first is the "rl" stage
    itself (reused from its cache); the others are run once and cached under a fingerprint of the stages before them.

    Returns {"variants": {name: {"config": …, "metrics": held-out evaluation, "history": RLHistory dict,
    "cpu_seconds": …}}, "sft_metrics": …}; `ablation_table` turns it into one row per variant."""
    profile = profile or current_profile()
    r = recipe(profile, seed)
    base_path = _base_path(r, profile)
    payload = {"rl_key": _stage_key(r, "rl", base_path, profile), "variants": ABLATION_VARIANTS}
    path = cache_dir() / "posttrain" / f"rl-ablation-{profile}-{cache_key(payload, __name__)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            _, sft_rec = stage("sft", profile, progress, seed)
            tok = course_tokenizer()
            evals = eval_set(r.eval_per_level)
            recs = {}
            for name, change in ABLATION_VARIANTS.items():  # the other variants first: the "rl" stage may still be
                cfg = replace(r.rl, **change)                # training in another process (zoo warm --jobs 2)
                if cfg != r.rl:
                    model, _ = stage("sft", profile, progress, seed)
                    t0 = time.process_time()
                    hist = train_rl(model, tok, cfg, evals, progress=progress, desc=f"rl ({name})")
                    recs[name] = {"metrics": evaluate(model, tok, evals), "history": hist.to_dict(),
                                  "cpu_seconds": time.process_time() - t0}
            out = {"profile": profile, "sft_metrics": sft_rec["metrics"], "variants": {}}
            for name, change in ABLATION_VARIANTS.items():
                cfg = replace(r.rl, **change)
                rec = recs[name] if name in recs else stage("rl", profile, progress, seed)[1]
                out["variants"][name] = {"config": asdict(cfg), **rec}
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(out))
            tmp.replace(path)
    return json.loads(path.read_text())


def harder_accuracy(metrics: dict) -> float:
    """Held-out accuracy on the harder prompts: the mean over levels 2 and 3."""
    return (metrics["accuracy_by_level"]["2"] + metrics["accuracy_by_level"]["3"]) / 2


def ablation_table(ablation: dict) -> list[dict]:
    """One row per variant of `rl_ablation`: held-out accuracy (all, harder levels), groups and completion tokens
    sampled, completion tokens trained on (per update epoch) and the share of those in groups with a non-zero
    advantage, the mean share of sampled groups dropped, and CPU seconds (sampling, updates, the whole run with its
    evaluations)."""
    rows = []
    for name, v in ablation["variants"].items():
        h, m = v["history"], v["metrics"]
        rows.append({"variant": name, "accuracy": m["accuracy"], "harder_accuracy": harder_accuracy(m),
                     "groups_sampled": sum(h["groups_sampled"]), "tokens_sampled": sum(h["tokens_sampled"]),
                     "tokens_trained": sum(h["tokens_trained"]),
                     "frac_trained_informative": sum(h["tokens_informative"]) / max(1, sum(h["tokens_trained"])),
                     "mean_frac_dropped": sum(h["frac_dropped"]) / len(h["frac_dropped"]),
                     "sample_seconds": h["sample_seconds"], "update_seconds": h["update_seconds"],
                     "cpu_seconds": v["cpu_seconds"]})
    return rows


def stage_summary(name: str, record: dict) -> dict:
    """One report.json entry: name, accuracy, format_rate and the details of the stage."""
    m = record["metrics"]
    out = {"name": name, "accuracy": m["accuracy"], "format_rate": m["format_rate"],
           "finished_rate": m["finished_rate"], "accuracy_by_level": m["accuracy_by_level"],
           "format_by_level": m["format_by_level"], "accuracy_by_kind": m["accuracy_by_kind"],
           "cpu_seconds": record["cpu_seconds"]}
    h = record["history"]
    if name == "sft":
        out.update(pool_levels=h["pool_levels"], kept_levels=h["kept_levels"], judged_at=h["judged_at"],
                   final_loss=h["loss"][-1])
    elif name == "rl":
        out.update(mean_frac_dropped=sum(h["frac_dropped"]) / len(h["frac_dropped"]),
                   mean_reward_first=_head_tail(h["reward"])[0], mean_reward_last=_head_tail(h["reward"])[1])
    elif name == "dpo":
        out.update(pairs=h["pairs"], final_margin=h["margin"][-1], heldout_pref_accuracy=h["heldout_pref_accuracy"][-1],
                   heldout_pref_accuracy_start=h["heldout_pref_accuracy_start"])
    return out


def _head_tail(xs: list[float]) -> tuple[float, float]:
    k = max(1, len(xs) // 4)
    return sum(xs[:k]) / k, sum(xs[-k:]) / k


def run(profile: str | None = None, out: str | Path | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Run (or load from the cache) every stage; write DIR/report.json and plots when `out` is given."""
    profile = profile or current_profile()
    t0 = time.process_time()
    records = {}
    for name in STAGES:
        _, records[name] = stage(name, profile, progress, seed)
    report = {"profile": profile, "stages": [stage_summary(n, records[n]) for n in STAGES],
              "cpu_seconds_this_call": time.process_time() - t0,
              "cpu_seconds_training": sum(records[n]["cpu_seconds"] for n in STAGES)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_report(records, out)
    return report


def plot_report(records: dict, out: Path) -> list[Path]:
    """curves.png (SFT loss and accuracy, RL reward and dropped groups, DPO margins) and report_card.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sft, rl, dpo = (records[s]["history"] for s in ("sft", "rl", "dpo"))
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].plot(sft["steps"], sft["loss"], lw=0.8, label="assistant-token loss")
    ax[0].set_xlabel("SFT step")
    ax[0].set_title("SFT")
    a2 = ax[0].twinx()
    a2.plot(sft["eval_steps"], sft["accuracy"], "o-", color="C1", label="held-out accuracy")
    a2.set_ylim(0, 1)
    ax[0].legend(loc="upper right", fontsize=8)
    ax[1].plot(rl["steps"], rl["reward"], lw=0.8, label="mean reward")
    ax[1].plot(rl["steps"], rl["frac_dropped"], lw=0.8, label="zero-advantage groups dropped")
    ax[1].plot(rl["eval_steps"], rl["accuracy"], "o-", label="held-out accuracy")
    ax[1].set_xlabel("RL step")
    ax[1].set_ylim(0, 1)
    ax[1].set_title("online RL")
    ax[1].legend(fontsize=8)
    ax[2].plot(dpo["steps"], dpo["chosen_reward"], lw=0.8, label="chosen reward")
    ax[2].plot(dpo["steps"], dpo["rejected_reward"], lw=0.8, label="rejected reward")
    ax[2].plot(dpo["steps"], dpo["margin"], lw=0.8, label="margin")
    ax[2].set_xlabel("DPO step")
    ax[2].set_title("DPO (β · log π/π_ref)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    curves = out / "curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = torch.arange(len(STAGES)).float()
    acc = [records[s]["metrics"]["accuracy"] for s in STAGES]
    fmt = [records[s]["metrics"]["format_rate"] for s in STAGES]
    ax.bar(x - 0.2, acc, 0.4, label="accuracy")
    ax.bar(x + 0.2, fmt, 0.4, label="format rate")
    ax.set_xticks(x.tolist(), list(STAGES))
    ax.set_ylim(0, 1)
    ax.set_title("held-out report card")
    ax.legend()
    fig.tight_layout()
    card = out / "report_card.png"
    fig.savefig(card, dpi=100)
    plt.close(fig)
    return [curves, card]
