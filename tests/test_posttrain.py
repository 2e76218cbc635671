"""Post-training: SFT, online RL, DPO and the pipeline (chapters 08–10).

The unit tests run on a tiny random model. The claims at the end come from real ci-profile runs of the pipeline: the
README's command in a fresh process (torch's default thread count), and `posttrain.run` in this one, each trained
once and cached like the zoo models; the CLI test reads the same cached stages as the latter.
"""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bench_module

from minillama4 import Llama4, Llama4Config
from minillama4.chat import IGNORE_INDEX, decode_reply, encode_chat, encode_prompt, stop_ids
from minillama4.course.data import course_tokenizer
from minillama4.losses import dpo_loss, grpo_advantages, token_logprobs
from minillama4.course.tasks import Task, eval_set, grade, sample_tasks
from minillama4.train.dpo import Pair, make_pairs, pair_logps, preference_accuracy
from minillama4.train.rl import RLConfig, _sample_groups, level_weights, policy_loss
from minillama4.train.rollout import Rollout, completion_batch, evaluate, pad_batch, rollouts
from minillama4.train.sft import (SFTConfig, judge_scores, make_examples, prune_easy, sft_loss, styled_reply,
                                  train_sft)

TOK = course_tokenizer()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = Llama4Config.preset("toy").replace(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=1, head_dim=32, intermediate_size=64,
                                             intermediate_size_mlp=128)
    torch.manual_seed(0)
    return Llama4(cfg).eval()


# ------------------------------------------------------------------------------------------------------------ SFT
def test_sft_loss_counts_only_assistant_tokens(tiny):
    tasks = sample_tasks(6, seed=0)
    ex = make_examples(tasks, TOK, canonical_fraction=0.5, seed=0)
    ids, labels = pad_batch([e[0] for e in ex], [e[1] for e in ex])
    with torch.no_grad():
        got = sft_loss(tiny, ids, labels)
        logits = tiny(ids)
    keep = labels != IGNORE_INDEX
    want = -logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(got, want)
    # the prompt is not learned: changing the labels of prompt positions away from -100 changes the loss
    assert keep.sum() < (ids != 0).sum() / 2
    with pytest.raises(ValueError, match="assistant"):
        sft_loss(tiny, ids, torch.full_like(labels, IGNORE_INDEX))


def test_styled_replies_mix_the_house_style_in_the_given_share():
    import random

    t = Task("max", 1, "Which is the largest: 3, 8?", "8")
    rng = random.Random(0)
    styles = [styled_reply(t, rng, 0.3) for _ in range(2000)]
    assert set(styles) == {"The answer is 8.", "Answer: 8", "It is 8"}
    assert 0.26 < styles.count("The answer is 8.") / 2000 < 0.34


def test_judge_scores_the_answer_tokens_and_pruning_keeps_the_hardest(tiny):
    tasks = sample_tasks(5, seed=1)
    scores = judge_scores(tiny, TOK, tasks)
    t = tasks[0]
    prefix = encode_prompt(TOK, t.messages()) + TOK.encode("The answer is")
    n = len(TOK.encode(" " + t.answer))
    full, _ = encode_chat(TOK, t.messages() + [{"role": "assistant", "content": t.reply()}])
    with torch.no_grad():
        logp = tiny(torch.tensor([full[:-1]])).log_softmax(-1)[0]
    want = -sum(logp[p - 1, full[p]] for p in range(len(prefix), len(prefix) + n))
    torch.testing.assert_close(scores[0], want)
    kept = prune_easy(tasks, torch.tensor([1.0, 5.0, 3.0, 0.5, 4.0]), 0.6)
    assert kept == [tasks[1], tasks[2], tasks[4]]  # the three highest, in the original order
    with pytest.raises(ValueError, match="keep_fraction"):
        prune_easy(tasks, scores, 0.0)
    with pytest.raises(ValueError, match="one score per task"):
        prune_easy(tasks, scores[:3], 0.5)


def test_sft_lowers_the_assistant_loss(tiny):
    model = copy.deepcopy(tiny)
    h = train_sft(model, TOK, SFTConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, pool_size=64,
                                        keep_fraction=0.5, judge_at=0, eval_every=0), judge=tiny, progress=False)
    assert sum(h.kept_levels.values()) == 32 and sum(h.pool_levels.values()) == 64
    assert sum(h.loss[-3:]) / 3 < sum(h.loss[:3]) / 3
    h = train_sft(copy.deepcopy(tiny), TOK, SFTConfig(steps=6, batch_size=8, pool_size=40, keep_fraction=0.25, judge_at=3,
                                                      eval_every=0), progress=False)  # the model judges itself
    assert h.judged_at == 3 and sum(h.kept_levels.values()) == 10
    with pytest.raises(ValueError, match="judge"):
        train_sft(copy.deepcopy(tiny), TOK, SFTConfig(steps=2, pool_size=8, judge_at=0), progress=False)


# ------------------------------------------------------------------------------------------------------------ rollouts
def test_rollouts_group_prompts_and_match_generate(tiny):
    tasks = sample_tasks(8, seed=2)
    eot = TOK.special_ids["<|eot|>"]
    # make <|eot|> tie with (and, as the lower id, win over) the token task 0's greedy reply writes third, so that
    # some replies end their turn and others run to the token budget
    prompt0 = torch.tensor([encode_prompt(TOK, tasks[0].messages())])
    third = int(tiny.generate(prompt0, max_new_tokens=3)[0, -1])
    model = copy.deepcopy(tiny)
    with torch.no_grad():
        model.lm_head.weight[eot] = model.lm_head.weight[third]
    assert eot < third
    greedy = rollouts(model, TOK, tasks, n=1)
    finished = []
    for t, (r,) in zip(tasks, greedy):
        ids = torch.tensor([encode_prompt(TOK, t.messages())])
        want = model.generate(ids, max_new_tokens=12, eos_token_id=stop_ids(TOK))[0, ids.shape[1]:].tolist()
        assert r.prompt_ids == ids[0].tolist()
        assert r.reply_ids == want  # in full: up to and including the stop token, or all 12 tokens
        text, done = decode_reply(TOK, want)
        g = grade(text, t, done)
        assert (r.reply, r.finished, r.correct, r.formatted) == (text, done, g.correct, g.formatted)
        finished.append(r.finished)
    assert greedy[0][0].reply_ids[-1] == eot and len(greedy[0][0].reply_ids) == 3
    assert any(finished) and not all(finished)
    groups = rollouts(model, TOK, tasks, n=4, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert [len(g) for g in groups] == [4] * 8 and all(r.task == t for t, g in zip(tasks, groups) for r in g)
    for g in groups:
        for r in g:
            assert 1 <= len(r.reply_ids) <= 12 and r.finished == (r.reply_ids[-1] in stop_ids(TOK))
            assert not set(r.reply_ids[:-1]) & set(stop_ids(TOK))  # cut at the first stop token
    assert len({tuple(r.reply_ids) for g in groups for r in g}) > 8  # sampled: the copies of a prompt differ
    m = evaluate(model, TOK, tasks)
    rs = [g[0] for g in greedy]
    assert m["accuracy"] == sum(r.correct for r in rs) / 8 and m["format_rate"] == sum(r.formatted for r in rs) / 8
    assert m["finished_rate"] == sum(finished) / 8


def test_completion_batch_labels_only_the_completion():
    ids, labels = completion_batch([[1, 5, 6], [1, 7]], [[9, 8], [4, 3, 2]])
    assert ids.tolist() == [[1, 5, 6, 9], [1, 7, 4, 3]]  # inputs: all but the last token, right padded
    assert labels.tolist() == [[-100, -100, 9, 8], [-100, 4, 3, 2]]  # targets: shifted by one, completion only


# ------------------------------------------------------------------------------------------------------------ RL
def test_curriculum_moves_from_start_to_end_weights():
    cfg = RLConfig(steps=11, start_weights=(1, 0, 0), end_weights=(0, 0, 1))
    assert level_weights(0, cfg) == [1, 0, 0] and level_weights(10, cfg) == [0, 0, 1]
    assert level_weights(5, cfg) == pytest.approx([0.5, 0, 0.5])


def test_zero_advantage_groups_are_dropped(tiny):
    cfg = RLConfig(prompts_per_step=6, group_size=4, drop_zero_advantage=True)
    groups, kept, adv, frac = _sample_groups(tiny, TOK, 0, cfg, torch.Generator().manual_seed(0))
    rewards = torch.tensor([[r.reward for r in g] for g in groups])
    _, keep = grpo_advantages(rewards)
    assert frac == pytest.approx(1 - keep.float().mean().item())
    assert len(kept) == int(keep.sum()) and all(len({r.reward for r in g}) > 1 for g in kept)
    cfg_all = RLConfig(prompts_per_step=6, group_size=4, drop_zero_advantage=False)
    _, kept_all, adv_all, _ = _sample_groups(tiny, TOK, 0, cfg_all, torch.Generator().manual_seed(0))
    assert len(kept_all) == 6 and adv_all.shape == (6, 4)


def test_policy_loss_gradient_vanishes_with_zero_advantage_and_kl_is_zero_at_the_reference(tiny):
    model = copy.deepcopy(tiny).train()
    tasks = sample_tasks(3, seed=4)
    rs = [r for g in rollouts(model, TOK, tasks, n=2, temperature=1.0, generator=torch.Generator().manual_seed(1))
          for r in g]
    ids, labels = completion_batch([r.prompt_ids for r in rs], [r.reply_ids for r in rs])
    with torch.no_grad():
        old = token_logprobs(model(ids), labels)
    cfg = RLConfig(kl_coef=0.1)
    loss, kl, clip = policy_loss(model, ids, labels, old, torch.zeros(len(rs)), cfg, ref_logp=old)
    loss.backward()
    assert kl.item() == pytest.approx(0.0, abs=1e-6) and clip == 0.0
    assert all(p.grad is None or p.grad.abs().max() < 1e-6 for p in model.parameters())
    model.zero_grad()
    loss, _, _ = policy_loss(model, ids, labels, old, torch.randn(len(rs)), cfg, ref_logp=old)
    loss.backward()
    assert max(p.grad.abs().max() for p in model.parameters() if p.grad is not None) > 1e-4


# ------------------------------------------------------------------------------------------------------------ DPO
def _r(task, reply, correct, formatted, ids):
    return Rollout(task, [1, 2], ids, reply, True, correct, formatted)


def test_pairs_prefer_correct_well_formatted_replies_against_the_closest_worse_one():
    t = Task("max", 1, "q", "8")
    good, fmt_only, wrong_fmt, wrong = (_r(t, "The answer is 8.", True, True, [3]), _r(t, "8", True, False, [4]),
                                        _r(t, "The answer is 2.", False, True, [5]), _r(t, "2", False, False, [6]))
    pairs = make_pairs([[wrong, good, fmt_only], [wrong_fmt, good], [fmt_only, wrong], [good, good]])
    assert [(p.chosen_ids, p.rejected_ids, p.kind) for p in pairs] == [([3], [4], "format"), ([3], [5], "correctness")]


def test_dpo_loss_is_ln2_at_the_start_and_the_reference_gets_no_gradient(tiny):
    policy, ref = copy.deepcopy(tiny).train(), copy.deepcopy(tiny).eval().requires_grad_(False)
    pairs = [Pair(encode_prompt(TOK, [{"role": "user", "content": "hi"}]), TOK.encode("The answer is 3.") + [8],
                  TOK.encode("3") + [8], "format", "", "") for _ in range(3)]
    pc, pr = pair_logps(policy, pairs)
    with torch.no_grad():
        rc, rr = pair_logps(ref, pairs)
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, 0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert preference_accuracy(policy, ref, pairs, 0.1) == 0.0  # ties
    loss.backward()
    assert all(p.grad is None for p in ref.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in policy.parameters())


# ------------------------------------------------------------------------------------------------------------ the pipeline
def assert_pipeline_claims(report: dict) -> None:
    """The claims the course makes about the post-training pipeline (here and in chapters 08-10); each bound sits
    below the worst case of the runs bench/claims_spread.py recorded (bench/results/claims_spread_{ci,laptop}.json)."""
    st = {s["name"]: s for s in report["stages"]}
    hard = lambda s: (s["accuracy_by_level"]["2"] + s["accuracy_by_level"]["3"]) / 2  # noqa: E731
    # SFT raises held-out accuracy over the base model (which never even ends its turn)
    assert st["base"]["accuracy"] < 0.05 and st["sft"]["accuracy"] > st["base"]["accuracy"] + 0.3
    # RL does not lose what SFT taught, overall or on the harder prompts (levels 2 and 3, 200 questions). That it
    # *raises* accuracy is not a claim about every run: one ci run (Intel, seed 0, 4 threads) broke even, 0.843 and
    # 0.845 before and after; how often and by how much it rises is asserted over the runs (assert_claims_over_runs)
    assert hard(st["rl"]) >= hard(st["sft"]) - 0.02 and st["rl"]["accuracy"] >= st["sft"]["accuracy"] - 0.02
    # DPO raises the targeted preference (the house format). What it costs in accuracy varies: up to 8 points under
    # ci, and under laptop up to 7 in 13 of 14 runs but 20 in one (Intel, seed 1, 1 thread: 0.873 -> 0.677, format
    # 0.76). One run is held to 25 points; "at most 10 in 4 runs of 5" is asserted over the runs
    assert st["dpo"]["format_rate"] > st["rl"]["format_rate"] + 0.3
    assert st["dpo"]["accuracy"] >= st["rl"]["accuracy"] - 0.25
    assert st["dpo"]["heldout_pref_accuracy"] > st["dpo"]["heldout_pref_accuracy_start"] + 0.5
    # zero-advantage groups were dropped (and are reported)
    assert 0 < st["rl"]["mean_frac_dropped"] < 1
    # (report.json also records cpu_seconds_training; speed is a benchmark's business, not a test's)


def assert_ablation_claims(rows: dict) -> None:
    """The claims about dropping zero-advantage groups (`posttrain.ablation_table`, one row per variant), with bounds
    below the worst case bench/claims_spread.py measured."""
    refill, drop, keep = rows["drop + refill"], rows["drop"], rows["keep all"]
    # dropping trains only on groups with signal; keeping all spends a large share of every update on zeros
    assert refill["frac_trained_informative"] == drop["frac_trained_informative"] == 1.0
    assert keep["frac_trained_informative"] < 0.85
    # dropping alone: far fewer completion tokens through the forward and backward passes of the updates (the update
    # CPU time falls about as much, but times are a benchmark's business, not a test's)
    assert drop["tokens_trained"] < 0.8 * keep["tokens_trained"]
    # refilling: every step trains on a full batch of informative groups, for the price of sampling more groups
    assert refill["groups_sampled"] > 1.3 * keep["groups_sampled"]
    # held-out accuracy at equal update steps (300 questions): refilling at least matches keeping every group.
    # Dropping alone trains on a third of the tokens and goes both ways against keeping everything: not asserted.
    assert refill["accuracy"] >= keep["accuracy"] - 0.02


@pytest.mark.parametrize("profile", ["ci", "laptop"])
def test_the_asserted_claims_hold_in_every_measured_run(profile):
    """bench/claims_spread.py ran the pipeline and the ablation at each (threads, seed) of the grid, and kept each
    run's report: every claim asserted here (and in chapters 08-10) holds in every one of them, under both profiles.
    Only runs of the current post-training code count (its source hash, as the cache keys use it), from every
    machine's record (bench/results/claims_spread_<profile>[_<machine>].json)."""
    runs = current_posttrain_runs(profile)
    grid = {(t, s) for t in (1, 2, 4) for s in (0, 1, 2)}  # threads x seeds, on any machine
    have = {(t, s) for (_, t, s) in runs}
    assert grid <= have, (f"{profile}: no run of the current post-training code at (threads, seed) "
                          f"{sorted(grid - have)}: run `nice python bench/claims_spread.py --profile {profile}`")
    for (machine, threads, seed), v in sorted(runs.items()):
        try:
            assert_pipeline_claims({"stages": v["stages"]})
            assert_ablation_claims({row["variant"]: row for row in v["ablation"]})
        except AssertionError as e:
            raise AssertionError(f"{profile} on {machine}, threads={threads} seed={seed}: {e}") from e
    assert_claims_over_runs(list(runs.values()))


def assert_claims_over_runs(runs: list) -> None:
    """What RL and DPO do across seeds and thread counts (each run's `values` from bench/claims_spread.py): RL raised
    held-out accuracy in at least 4 of 5 runs, by 5 points on average, and DPO cost at most 10 points in at least 4
    of 5. Measured: RL under ci in 17 of 18 runs (1 to 20 points; one broke even), mean +9.2; under laptop in 14 of 14
    (6 to 25 points), mean +14. DPO under ci within 8 points in 18 of 18, under laptop within 7 in 13 of 14."""
    gains = [v["rl_gain"] for v in runs]
    assert sum(g > 0 for g in gains) >= 0.8 * len(gains), gains
    assert sum(gains) / len(gains) > 0.05, gains
    dpo = [v["dpo_accuracy_change"] for v in runs]
    assert sum(d >= -0.10 for d in dpo) >= 0.8 * len(dpo), dpo


def test_claims_over_runs_fail_when_rl_mostly_breaks_even_or_dpo_often_costs():
    """The claims over runs catch an RL stage that rarely helps or helps too little on average, and a DPO stage that
    often costs accuracy."""
    ok = [{"rl_gain": g, "dpo_accuracy_change": d} for g, d in zip((0.1, 0.2, 0.0, 0.05, 0.1), (0, -0.2, 0, 0, 0))]
    assert_claims_over_runs(ok)
    for gains, dpo in (((0.3, 0.0, 0.0, 0.2, 0.1), (0,) * 5),  # RL helped in 3 of 5
                       ((0.01, 0.02, 0.03, 0.04, 0.05), (0,) * 5),  # by 3 points on average
                       ((0.1,) * 5, (0, -0.2, -0.15, 0, 0))):  # DPO cost more than 10 points in 2 of 5
        with pytest.raises(AssertionError):
            assert_claims_over_runs([{"rl_gain": g, "dpo_accuracy_change": d} for g, d in zip(gains, dpo)])


def current_posttrain_runs(profile: str, results: Path = ROOT / "bench" / "results") -> dict:
    """{(machine, threads, seed): values} from every post-training record of `profile` made by the current code."""
    from minillama4.course.cachekey import source_hash

    # the code bench/claims_spread.py stamps its records with
    return bench_module("spread").current_runs(results, "claims_spread", profile,
                                                source_hash("minillama4.train.posttrain"))


def test_runs_of_other_post_training_code_do_not_count(tmp_path):
    """A record stamped with another hash of the post-training code covers nothing (the claims test then asks for a
    new sweep), and records of two machines are read together."""
    from minillama4.course.cachekey import source_hash

    code = source_hash("minillama4.train.posttrain")
    run = {"threads": 1, "seed": 0, "wall_seconds": 1.0, "values": {"x": 1}}
    for name, cpu, c in (("ci", "A", code), ("ci_b", "B", code), ("ci_old", "C", "0" * 64)):
        (tmp_path / f"claims_spread_{name}.json").write_text(json.dumps(
            {"profile": "ci", "machine": {"cpu": cpu}, "code": c, "runs": [run]}))
    assert set(current_posttrain_runs("ci", tmp_path)) == {("A", 1, 0), ("B", 1, 0)}
    assert current_posttrain_runs("laptop", tmp_path) == {}


@pytest.mark.timeout(3600)
def test_the_readme_posttrain_command_then_the_claims(tmp_path):
    """A learner runs the README's post-training command (torch's default thread count), then the test suite (here
    perhaps with another thread count): the claims hold for both, and the suite never reads stages that a run at
    another thread count cached (the cache key includes it)."""
    from minillama4.train.posttrain import run

    readme = (ROOT / "README.md").read_text()
    cmd = next(line for line in readme.splitlines() if line.startswith("minillama4 posttrain ")).split("#")[0].split()
    cmd[cmd.index("--out") + 1] = str(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run([sys.executable, "-m", *cmd], env=env, capture_output=True, text=True, timeout=3500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_pipeline_claims(json.loads((tmp_path / "report.json").read_text()))
    assert_pipeline_claims(run(profile="ci", progress=False))  # what the suite's claim test reads, at this thread count


@pytest.fixture(scope="module")
def ci_report(tmp_path_factory):
    """One real ci-profile run of base → SFT → RL → DPO (trained on first use, then read from the stage cache)."""
    from minillama4.train.posttrain import run

    out = tmp_path_factory.mktemp("posttrain")
    return run(profile="ci", out=out, progress=False), out


@pytest.mark.timeout(1800)
def test_pipeline_report_and_plots(ci_report):
    from minillama4.train.posttrain import STAGES, recipe, stage

    report, out = ci_report
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert [s["name"] for s in report["stages"]] == list(STAGES)
    records = {n: stage(n, "ci", progress=False) for n in STAGES}  # the cached stages the report was made from
    for s in report["stages"]:
        rec = records[s["name"]][1]
        for k in ("accuracy", "format_rate", "finished_rate", "accuracy_by_level", "format_by_level", "accuracy_by_kind"):
            assert s[k] == rec["metrics"][k], (s["name"], k)
        assert s["cpu_seconds"] == rec["cpu_seconds"]
    # the stage's model gives the stage's numbers: held-out evaluation of the cached SFT model, again
    sft_model, sft_rec = records["sft"]
    assert evaluate(sft_model, TOK, eval_set(recipe("ci").eval_per_level)) == sft_rec["metrics"]
    st = {s["name"]: s for s in report["stages"]}
    h = {n: records[n][1]["history"] for n in STAGES}
    assert (st["sft"]["final_loss"], st["sft"]["judged_at"]) == (h["sft"]["loss"][-1], h["sft"]["judged_at"])
    assert (st["sft"]["pool_levels"], st["sft"]["kept_levels"]) == (h["sft"]["pool_levels"], h["sft"]["kept_levels"])
    assert st["rl"]["mean_frac_dropped"] == pytest.approx(sum(h["rl"]["frac_dropped"]) / len(h["rl"]["frac_dropped"]))
    k = len(h["rl"]["reward"]) // 4
    assert st["rl"]["mean_reward_first"] == pytest.approx(sum(h["rl"]["reward"][:k]) / k)
    assert st["rl"]["mean_reward_last"] == pytest.approx(sum(h["rl"]["reward"][-k:]) / k)
    assert (st["dpo"]["pairs"], st["dpo"]["final_margin"]) == (h["dpo"]["pairs"], h["dpo"]["margin"][-1])
    assert st["dpo"]["heldout_pref_accuracy"] == h["dpo"]["heldout_pref_accuracy"][-1]
    assert st["dpo"]["heldout_pref_accuracy_start"] == h["dpo"]["heldout_pref_accuracy_start"]
    assert report["cpu_seconds_training"] == pytest.approx(sum(records[n][1]["cpu_seconds"] for n in STAGES))
    for png in ("curves.png", "report_card.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(1800)
def test_pipeline_claims_hold_under_the_ci_profile(ci_report):
    assert_pipeline_claims(ci_report[0])


@pytest.fixture(scope="module")
def ci_ablation(ci_report):
    """RL from the ci SFT model three ways: drop + refill (the "rl" stage), drop only, keep every group (cached)."""
    from minillama4.train.posttrain import ablation_table, rl_ablation

    abl = rl_ablation(profile="ci", progress=False)
    return abl, {row["variant"]: row for row in ablation_table(abl)}


@pytest.mark.timeout(1800)
def test_dropping_zero_advantage_groups_under_the_ci_profile(ci_report, ci_ablation):
    abl, rows = ci_ablation
    hist = {name: v["history"] for name, v in abl["variants"].items()}
    # the same SFT model, seed and number of update steps; the recipe's variant is the pipeline's RL stage itself
    assert len({len(h["steps"]) for h in hist.values()}) == 1
    rl = {s["name"]: s for s in ci_report[0]["stages"]}["rl"]
    assert rows["drop + refill"]["accuracy"] == rl["accuracy"]
    # the fraction dropped is recorded per step, and zero-advantage groups are common (easy and hopeless prompts)
    for h in hist.values():
        assert len(h["frac_dropped"]) == len(h["steps"]) and 0 < sum(h["frac_dropped"]) / len(h["steps"]) < 1
    assert_ablation_claims(rows)


@pytest.mark.timeout(1800)
def test_cli_posttrain_writes_the_report(ci_report, tmp_path, capsys):
    from minillama4.cli import main

    assert main(["posttrain", "--profile", "ci", "--out", str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["stages"] == ci_report[0]["stages"]
    printed = capsys.readouterr().out
    assert "sft" in printed and "dpo" in printed and "report.json" in printed
