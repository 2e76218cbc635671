"""The notebooks' claims about trained toy models (chapters 03, 04, 06, 07, 11, 13 and 14) hold in every measured run.

bench/model_claims_spread.py reruns each claim group's notebook cells at several thread counts and seeds and keeps the
notebooks' variables from each run in bench/results/model_claims_spread_<profile>[_<machine>].json (one record per
profile and machine). Each check below is the notebook's assert, applied to those variables. Only runs of the current
code count: a record made by other code of a group's modules no longer covers that group.
"""

import json
import sys
from pathlib import Path

import pytest
from conftest import bench_module

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GRID = {(t, s) for t in (1, 2, 4) for s in (0, 1, 2)}  # threads × seeds, for every group under both profiles
MARGIN = 0.1  # chapter 07, cell 30


def moe_claims(v: dict, profile: str) -> None:
    """Chapter 03, cell 27: MoE and dense end within 0.05 nats (the sign is not asserted); cell 36: some layer sends
    a large share of one domain's tokens to one expert (the even share is 1/4)."""
    assert v["same_eval_steps"]
    assert abs(v["dense_val"] - v["moe_val"]) < 0.05, (v["dense_val"], v["moe_val"])
    assert v["domain_max_share"] > 0.4, v["domain_max_share"]  # worst measured: 0.514 (t1 s2)


def balance_claims(v: dict, profile: str) -> None:
    """Chapter 03, cell 58."""
    assert v["final_switch"] < v["final_none"], v  # by 0.12 to 0.46
    assert v["final_auxfree"] < v["final_none"], v  # by 0.02 (t1 s2) to 0.55
    # not asserted: "the Switch loss is ahead over the whole second half too" (seed 2: 1.442 vs 1.435 at 1 thread)
    assert v["none_final_max"] > 1.3, v["none_final_max"]
    assert v["val_spread"] < 0.1, v["val_spread"]


def metap_claims(v: dict, profile: str) -> None:
    """Chapter 13, cells 21, 32 and 34."""
    n = v["n_lrs"]
    assert v["metap_max_abs_slope"] < 0.3, v["slopes"]["metap"]
    assert v["standard_min_delta_slope"] > 1.0, v["slopes"]["standard"]
    for name, b in v["best"].items():
        if name.startswith("metap"):
            assert all(0 < i < n - 1 for i in b["index"]), (name, b["index"])
            assert b["spread"] <= 1, (name, b["index"])
        else:
            # every optimum was asserted interior until laptop seeds 1 and 2 (Intel, 1 thread) put standard, L = 4,
            # D = 128 on the grid's lowest learning rate: a true optimum lower still only moved further down
            assert 0 < b["index"][0] < n - 1 and max(b["index"]) < n - 1, (name, b["index"])
            # was ">= 3": seed 1 moved 2 steps at both depths
            assert b["index"][0] - b["index"][-1] >= 2, (name, b["index"])
    assert v["widest_metap_minus_standard"] < 0, v["best"]
    assert v["depth_moves"] <= 1, v["best"]


def fp8_claims(v: dict, profile: str) -> None:
    """Chapter 14, cell 51."""
    # worst measured: FP8 −0.048 (ci, Intel, t1 s1 and t2 s1: FP8 ended below float32), bf16 −0.022 (ci, AMD).
    # Was 0.05, which left 0.002 to spare on the Intel machine.
    assert abs(v["gap_fp8"]) < 0.06 and abs(v["gap_bf16"]) < 0.06, v["gaps"]
    # was "> 0.1 and > 3 |fp8 gap|": seed 2 measured 0.0995 (2 threads) and 0.103 against 0.037 (1 and 4 threads)
    assert v["gap_unscaled"] > v["gap_fp8"] + 0.05, v["gaps"]  # worst measured: 0.066 (t1 s2)
    assert v["grad_underflow_scaled"] < 1e-3 and v["grad_underflow_unscaled"] > 0.3, v
    assert v["max_overflow"] == 0, v


def vlm_claims(v: dict, profile: str) -> None:
    """Chapter 06, cells 38 and 40."""
    acc, acc_blind, chance = v["vision"], v["blind"], v["chance"]
    mean = lambda a: sum(a.values()) / len(a)  # noqa: E731
    for task in chance:
        assert all(abs(a - chance[task]) <= 0.15 for a in v["blind_history"][task]), (task, v["blind_history"][task])
        assert acc_blind[task] <= chance[task] + 0.1, (task, acc_blind[task])
        assert acc[task] > acc_blind[task], (task, acc[task], acc_blind[task])
    # worst measured: +0.643 (ci, t2 s1); the old learning rate 3e-3 gave +0.145 (laptop s1)
    assert mean(acc) >= mean(acc_blind) + 0.15, (mean(acc), mean(acc_blind))


def distill_claims(v: dict, profile: str) -> None:
    """Chapter 07, cells 9, 18, 25, 30, 31 and 34."""
    assert v["scout_same"] < v["teacher_same"]
    scaled, Ts = v["grad_norms"], v["temperatures"]
    raw = [g / T**2 for g, T in zip(scaled, Ts)]
    assert max(scaled[2:]) / min(scaled[2:]) < 1.5, scaled
    assert raw[0] / raw[-1] > 50, raw
    assert v["live_ce"][-1] < v["live_ce"][0] and v["live_soft"][-1] < v["live_soft"][0], (v["live_ce"], v["live_soft"])
    assert v["hard_final"] - v["dist_final"] > MARGIN, (v["hard_final"], v["dist_final"])
    assert v["caught_up"] is not None and v["caught_up"] < v["steps"], (v["caught_up"], v["steps"])
    assert v["teacher_same"] < v["dist_final"], (v["teacher_same"], v["dist_final"])
    assert v["ce_dist"] < v["ce_hard"], (v["ce_dist"], v["ce_hard"])
    assert v["co_final"] < v["hard_final"] - MARGIN, (v["co_final"], v["hard_final"])


def needle_claims(v: dict, profile: str) -> None:
    """Chapter 04, cells 61 and 65 (the passkey claims only where RoPE and iRoPE learned it, as in the notebook)."""
    inside, beyond, by_len = v["inside"], v["beyond"], v["by_len"]
    assert beyond["RoPE"] > inside["RoPE"] + 0.25, (inside, beyond)
    assert beyond["iRoPE"] < inside["iRoPE"] + 0.1, (inside, beyond)
    assert beyond["iRoPE"] < beyond["RoPE"] - 0.2, beyond
    assert inside["NoPE"] > inside["iRoPE"], inside
    if min(by_len["RoPE"][0], by_len["iRoPE"][0]) >= 0.9:
        assert max(by_len["RoPE"][2:]) <= 0.1, by_len
        assert by_len["iRoPE"][-1] >= 0.5 * by_len["iRoPE"][0], by_len
    else:
        assert profile == "ci", by_len  # only the short ci training is too brief to learn the passkey


def quant_claims(v: dict, profile: str) -> None:
    """Chapter 11, cell 60 and chapter 14, cell 38."""
    # accuracy was "within 3 of 300 questions" until seed 2 (1 thread, a 0.74-accuracy model) lost 19 with g32 sym
    # perplexity was "within 1%" until laptop seed 0 (Intel, 1 thread) moved it 0.89%
    assert v["int4_max_ppl_change"] < 0.015 and v["int4_max_accuracy_change"] <= 0.1, v
    assert v["int4_min_kl"] > 1e-4, v["kl"]
    kl, G = v["kl"], v["group_sizes"]
    k = lambda g, sym: kl[f"int4 g{g} {'sym' if sym else 'asym'}"]  # noqa: E731
    assert all(k(g, False) < k(g, True) for g in G), kl
    # was "for both scale kinds": symmetric g32 was above g128 at 2 threads, seed 0 (0.00164 vs 0.00152)
    assert k(G[0], False) < k(G[-1], False), kl
    # not asserted: asymmetric below symmetric at equal bits. At 4.5 bits (g = 128 vs symmetric g = 64) until a ci run
    # measured 1.04× (Intel, t4 s2); at 5 bits (g = 64 vs symmetric g = 32: 0.65-0.84× under ci) until laptop t2 s1
    # (Intel) measured 1.04× (the laptop runs 0.86-1.04×)
    n = v["questions"]
    # was "within one question": seed 2 (1 thread) moved two; then "within 3" until laptop seed 1 (1 thread, a
    # 0.68-accuracy chat model) moved 6 with FP8 experts
    assert max(round(abs(v[k]) * n) for k in ("fp8_accuracy_change", "int4_accuracy_change")) <= 10, v
    assert v["fp8_logit_rel_rms"] < v["int4_logit_rel_rms"], v


CLAIMS = {"moe": moe_claims, "balance": balance_claims, "vlm": vlm_claims, "distill": distill_claims,
          "needle": needle_claims, "metap": metap_claims, "fp8": fp8_claims, "quant": quant_claims}


def current_runs(profile: str) -> dict[str, dict]:
    """{group: {(machine, threads, seed): values}} from every record of `profile` whose group code is current."""
    from minillama4.course.cachekey import source_hash

    code = {g: source_hash(*modules) for g, modules in bench_module("model_claims_spread").CODE.items()}
    return bench_module("spread").current_runs(RESULTS, "model_claims_spread", profile, code)


@pytest.mark.parametrize("profile", ["ci", "laptop"])
def test_the_asserted_claims_hold_in_every_measured_run(profile):
    """Every claim group was measured on the current code at 1, 2 and 4 threads × seeds 0-2, and each of
    its notebook's claims holds in every current run (and the long-context runs do not depend on the thread count)."""
    runs = current_runs(profile)
    for group in sorted(CLAIMS):
        have = {(t, s) for (_, t, s) in runs.get(group, {})}
        assert GRID <= have, (f"{profile} {group}: no run of the current code at (threads, seed) "
                              f"{sorted(GRID - have)}: run `nice python bench/model_claims_spread.py --profile "
                              f"{profile} --claims {group}`")
    for group, by_run in sorted(runs.items()):
        for (machine, threads, seed), v in sorted(by_run.items()):
            try:
                CLAIMS[group](v, profile)
                if group == "needle":
                    same_as_one_thread(v, by_run[machine, 1, seed])
            except AssertionError as e:
                raise AssertionError(f"{profile} {group} on {machine}, threads={threads} seed={seed}: {e}") from e


def same_as_one_thread(v: dict, one: dict) -> None:
    """Chapter 04 trains its long-context models at one thread (cell 58: "the result does not depend on the core
    count"): a run started at 2 or 4 threads gives the 1-thread run's numbers exactly."""
    assert v["threads_used"] == 1
    drop = lambda d: {k: x for k, x in d.items() if k != "cpu_seconds"}  # noqa: E731
    assert drop(v) == drop(one), {k: (v[k], one[k]) for k in drop(v) if v[k] != one[k]}


def test_a_record_keeps_each_groups_runs_while_its_code_is_unchanged(tmp_path, monkeypatch):
    """bench/spread.py's open_record with a code per group: a change to one group's code drops that group's runs
    only (and the notes of runs carried over to a new code: kept while one of their groups is); a file of another
    machine or profile is refused, never overwritten."""
    spread = bench_module("spread")

    path = tmp_path / "record.json"
    runs = [{"group": g, "threads": 1, "seed": 0, "values": {}} for g in ("a", "b")]
    notes = [{"groups": ["a"], "from": {"a": "0"}, "why": "..."}, {"groups": ["b"], "from": {"b": "0"}, "why": "..."}]
    path.write_text(json.dumps({"profile": "ci", "machine": spread.machine(), "code": {"a": "1", "b": "1"},
                                "runs": runs, "restamped": notes}))
    assert spread.open_record(path, "ci", {"a": "1", "b": "1"})["runs"] == runs
    kept = spread.open_record(path, "ci", {"a": "1", "b": "2", "c": "1"})
    assert kept["runs"] == runs[:1] and kept["code"] == {"a": "1", "b": "2", "c": "1"}
    assert kept["restamped"] == notes[:1]
    assert "restamped" not in spread.open_record(path, "ci", {"a": "2", "b": "2"})
    with pytest.raises(SystemExit, match="profile 'ci'.*pass --json"):
        spread.open_record(path, "laptop", {"a": "1", "b": "1"})
    monkeypatch.setattr(spread, "machine", lambda: {"cpu": "another"})
    with pytest.raises(SystemExit, match="on 'Intel|on 'AMD|pass --json"):
        spread.open_record(path, "ci", {"a": "1", "b": "1"})
    assert spread.open_record(tmp_path / "new.json", "ci", {"a": "1"}) == {
        "profile": "ci", "machine": {"cpu": "another"}, "code": {"a": "1"}, "runs": []}
    assert json.loads(path.read_text())["runs"] == runs  # untouched


def test_runs_of_other_code_do_not_count(tmp_path, monkeypatch):
    """A record whose code for a group differs from the group's current source covers nothing for that group; the
    other groups' runs still count, and records of each machine add up."""
    record = json.loads((RESULTS / "model_claims_spread_ci.json").read_text())
    stale = json.loads(json.dumps(record))
    assert {r["group"] for r in record["runs"]} >= {"moe", "balance"}
    stale["code"]["moe"] = "0" * 64
    (tmp_path / "model_claims_spread_ci.json").write_text(json.dumps(stale))
    monkeypatch.setattr(sys.modules[__name__], "RESULTS", tmp_path)
    runs = current_runs("ci")
    assert "moe" not in runs and "balance" in runs
    other = {**record, "machine": {**record["machine"], "cpu": "another"},
             "runs": [r for r in record["runs"] if r["group"] == "moe"]}
    (tmp_path / "model_claims_spread_ci_another.json").write_text(json.dumps(other))
    assert {m for (m, _, _) in current_runs("ci")["moe"]} == {"another"}
