"""Expert parallelism on gloo: 2 and 4 CPU processes give what one process gives (logits, greedy tokens,
gradients, a training run), with uneven loads, int4, per-rank loading, the CLI, and clear errors.

The ranks run the checks of `parallel_ranks.py`: one launch per world size runs them all, and each test below
reads its check's result from every rank."""

import subprocess
import sys

import pytest
import torch

import minillama4
from minillama4.cli import main
from minillama4.parallel import block_range, expert_major_order, rank_weight_bytes, send_counts
from conftest import write_hf_checkpoint
from parallel_ranks import launch
from test_chat_cli import VOCAB as CHAT_VOCAB, write_tokenizer

TOL = 1e-5  # relative logit / gradient error allowed (float32; measured ≤ 2e-6)
CHECKS_2 = ["logits_and_greedy", "int4", "reads_only_its_part", "gradients", "training_matches_one_process",
            "uneven_loads", "bad_input", "chat"]
CHECKS_4 = ["logits_and_greedy", "gradients", "training_matches_one_process", "uneven_loads"]
CHAT_ARGS = ["--temperature", "0", "--max-new-tokens", "6"]
CHAT_INPUT = "Hello there\nWho are you?\n"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("ep")
    w = lambda name, *a, **k: str(write_hf_checkpoint(d / name, *a, **k))  # noqa: E731
    return dict(
        ckpts={"scout": w("scout", "scout"),
               "scout-top2-sharded": w("scout2", "scout", top_k=2, max_shard_size="60KB", num_local_experts=8),
               "maverick": w("maverick", "maverick", top_k=2)},
        scout_seed1=w("scout-seed1", "scout", seed=1),
        odd_ckpt=w("odd", "scout", num_local_experts=3),
        int4_ckpt=w("int4", "scout", top_k=2, hidden_size=128, intermediate_size=256, initializer_range=0.02),
        chat_ckpt=str(write_tokenizer(write_hf_checkpoint(d / "chat", vocab_size=CHAT_VOCAB))),
        chat_args=CHAT_ARGS, chat_input=CHAT_INPUT)


def _results(ranks: list[dict], name: str) -> list:
    """Each rank's value of one check; a check that raised on some rank fails the test with its traceback."""
    errors = [f"rank {r}:\n{res[name][1]}" for r, res in enumerate(ranks) if res[name][1]]
    if errors:
        pytest.fail(f"check {name} raised\n" + "\n".join(errors))
    return [res[name][0] for res in ranks]


@pytest.fixture(scope="module")
def two(ctx):
    return launch(2, CHECKS_2, ctx)


@pytest.fixture(scope="module")
def four(ctx):
    return launch(4, CHECKS_4, ctx)


@pytest.fixture(params=[2, 4])
def ranks(request):
    return request.getfixturevalue({2: "two", 4: "four"}[request.param])


# ------------------------------------------------------------------------------------------------ the arithmetic
def test_send_counts_and_expert_major_order():
    counts_E = torch.tensor([1, 0, 2, 5, 0, 0, 3, 1])  # 8 experts, 4 ranks: blocks of 2
    assert send_counts(counts_E, 4).tolist() == [1, 7, 0, 4]
    assert send_counts(counts_E, 2).tolist() == [8, 4]
    recv_Ne = torch.tensor([[2, 1], [0, 3]])  # from rank 0: 2 rows for my expert 0, 1 for expert 1; rank 1: 0, 3
    # arrival: e0 e0 e1 | e1 e1 e1  →  by expert: rows 0 1 (e0), then 2 3 4 5 (e1, rank 0's first)
    assert expert_major_order(recv_Ne).tolist() == [0, 1, 2, 3, 4, 5]
    recv_Ne = torch.tensor([[1, 2], [3, 0], [0, 1]])  # arrival: a0 | b1 b1 | c0 c0 c0 | d1 (letters: rank)
    assert expert_major_order(recv_Ne).tolist() == [0, 3, 4, 5, 1, 2, 6]
    assert block_range(128, 8, 3) == (48, 64)


def test_rank_weight_bytes_by_hand():
    mav = minillama4.Llama4Config.preset("maverick")
    D, F, L = 5120, 8192, 24  # 24 MoE layers of 128 experts
    routed, shared = L * 128 * 3 * D * F, L * 3 * D * F
    other = mav.num_parameters() - routed - shared
    assert rank_weight_bytes(mav, 8) == 2 * (routed // 8 + shared + other)
    assert rank_weight_bytes(mav, 8, expert_bytes=0.53125) == (routed // 8 + shared) * 17 // 32 + 2 * other
    assert rank_weight_bytes(mav, 1, expert_bytes=0.53125) == minillama4.quant.expected_int4_bytes(mav)


def test_info_prints_per_rank_memory(capsys):
    assert main(["info", "--preset", "maverick", "--expert-parallel", "8", "--quantize", "int4"]) == 0
    out = capsys.readouterr().out
    w = rank_weight_bytes(minillama4.Llama4Config.preset("maverick"), 8, 0.53125)
    assert "16 routed experts per MoE layer" in out and f"per-rank weights  {w / 1e9:.1f} GB" in out
    assert "1.50 GiB at 8K" in out  # 36 chunked layers × 8K + 12 NoPE layers × 8K tokens × 4 KiB
    assert main(["info", "--preset", "scout", "--expert-parallel", "3"]) == 1
    assert "must divide the 16 routed experts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ on N ranks
def test_logits_and_greedy_tokens_equal_one_process(ranks):
    for per_rank in _results(ranks, "logits_and_greedy"):
        assert len(per_rank) == 9
        for (ckpt, kind, tokens), (err, same) in per_rank.items():
            assert err < TOL and same, (ckpt, kind, tokens, err, same)


def test_int4_experts_split_over_ranks(two):
    for per_rank in _results(two, "int4"):
        for kind, (err, same) in per_rank.items():
            assert err < TOL and same, (kind, err)


def test_a_rank_reads_only_its_experts(two):
    for per_rank in _results(two, "reads_only_its_part"):
        for quantize, r in per_rank.items():
            assert r["whole_experts"] == [], quantize  # no expert tensor read whole
            assert r["n_expert_tensors"] == 2 * r["moe_layers"]  # gate_up and down of every MoE layer
            L, share = r["moe_layers"], r["share"]  # elements of this rank's gate_up_proj part; down_proj: half
            assert r["read"] == sorted([share // 2] * L + [share] * L) and share * 2 == r["full"], (quantize, r)


def test_gradients_equal_one_process(ranks):
    for per_rank in _results(ranks, "gradients"):
        for how, (errs, n_params) in per_rank.items():
            assert len(errs) == n_params, how  # every parameter got a gradient, and the total norm is compared
            worst = max(errs, key=errs.get)
            assert errs[worst] < TOL, (how, worst, errs[worst])


def test_training_loss_equals_one_process(ranks):
    for one, many, val_one, val_many in _results(ranks, "training_matches_one_process"):
        assert len(one) == len(many) == 4 and one[0] != one[-1]
        assert max(abs(a - b) for a, b in zip(one, many)) < 1e-5, (one, many)
        assert abs(val_one[-1] - val_many[-1]) < 1e-5


def test_uneven_loads(ranks):
    for r in _results(ranks, "uneven_loads"):
        assert r["used"] == [1, 2]  # expert 0 and every expert from 3 on receive nothing
        assert abs(r["loss"][0] - r["loss"][1]) < 1e-6
        assert r["grad_max"] > 0 and r["grad_err"] < TOL * r["grad_max"]


def test_destroy_process_group_stops_gloo_threads(ranks):
    """After destroy_process_group no gloo thread may be left. The ranks built models on the meta device, which makes
    torch import torch.distributed.nn.functional; imported after the group was made, its default arguments would hold
    the group, gloo's threads would outlive destroy_process_group, and a process could abort at exit ("terminate
    called without an active exception") when one of them needs the GIL during interpreter shutdown."""
    for rank, names in enumerate(_results(ranks, "threads_after_destroy")):
        if names is None:
            pytest.skip("thread names are read from /proc (Linux only)")
        left = [n for n in names if "gloo" in n]
        assert not left, (f"rank {rank}: gloo threads {left} still run after destroy_process_group: something holds "
                          "the process group (was torch.distributed.nn.functional imported after init_process_group?)")


def test_bad_input_is_a_clear_error_on_every_rank(two, scout_ckpt):
    for m in _results(two, "bad_input"):
        assert "3 experts cannot be split evenly over 2 ranks" in m["not_divisible"]
        assert "intermediate_size=31 cannot be split evenly over 2 ranks" in m["tensor_not_divisible"]
        assert "ranks disagree on the model config" in m["other_config"]
        assert "ranks disagree on the checkpoint" in m["other_weights"]
        assert "kind must be 'expert' or 'tensor'" in m["bad_kind"]
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        minillama4.from_pretrained(scout_ckpt, expert_parallel=True)


def test_chat_rank0_reads_and_prints_what_one_process_prints(two, ctx, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(CHAT_INPUT))
    assert main(["chat", "--checkpoint", ctx["chat_ckpt"], *CHAT_ARGS]) == 0
    want = capsys.readouterr().out
    assert want.count("\n") == 2
    (code0, out0), (code1, out1) = _results(two, "chat")
    assert code0 == code1 == 0 and out0 == want and out1 == ""


def test_generate_under_torchrun_prints_what_one_process_prints(ctx, capsys):
    ckpt = ctx["ckpts"]["maverick"]
    args = ["generate", ckpt, "--ids", "5", "7", "9", "--max-new-tokens", "12"]
    assert main(args) == 0
    want = capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "minillama4",
                        *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want and len(want.split()) == 12


def test_pretrain_command_on_one_process(tmp_path, capsys):
    import json

    assert main(["pretrain", "--steps", "2", "--profile", "ci", "--out", str(tmp_path), "--quiet"]) == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist["train_loss"]) == 2 and len(hist["val_loss"]) == 1
    assert "final train loss" in capsys.readouterr().out
