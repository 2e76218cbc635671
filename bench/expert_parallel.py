"""Expert parallelism on CPU processes: throughput at 1, 2 and 4 ranks, the bytes each all-to-all moves against the
arithmetic, and the computed all-to-all volume and per-GPU memory of Maverick on 8 GPUs.

What it measures
----------------
1. Throughput. The same random model (hidden 256, expert FFN 512, 16 routed experts top-1 + shared expert, 4 MoE
   layers, vocab 4096) on N = 1, 2, 4 gloo processes, one thread each, each rank with its own batch of
   2 × 256 tokens (data-parallel serving: tokens="own"), forward under no_grad. Tokens/s = N · 512 / the slowest
   rank's median step time; tokens per CPU-second = N · 512 / the CPU time of all ranks in a step (the work the
   exchange adds, whatever else the machine runs). The 1-process row is the same model without any exchange.
2. Bytes. Every `all_to_all_single` call is recorded: the rows each rank sends to the other ranks × row bytes.
   The arithmetic from the routing: a (token, expert) row leaves its rank iff its expert lives on another rank,
   and comes back the same way. So in the dispatch rank r sends D × 4 bytes (float32) per row of its own routed to
   another rank's experts; in the combine, per row another rank routed to r's experts; before both, the count
   exchange sends E/N int64 to each other rank. The script asserts measured == computed, exactly, at every call.
   Under uniform routing the expectation per token per MoE layer and direction is k · D · bytes · (N − 1) / N.
3. With --train-steps: the toy pretraining (mini-scout recipe, ci profile, global batch 16 × 128) on 1, 2, 4
   ranks, data + expert parallel: the largest difference of the train loss from the 1-process run over the steps,
   with the balancing loss off (then only the order of floating-point sums differs) and at the recipe's 0.01
   (each rank computes it from its own tokens' routing).
4. Computed (no run): Maverick (D 5120, 128 experts top-1, 24 MoE layers) on 8 GPUs in bf16: all-to-all bytes per
   token, vs the all-reduce of Meta's tensor-parallel experts; per-GPU weight memory in bf16 / fp8 / int4; and the
   fewest H100 80 GB / H200 141 GB that hold Scout and Maverick.

Run
---
    python bench/expert_parallel.py                      # 1, 2, 4 processes, 5 timed rounds after 2 warm-up
    python bench/expert_parallel.py --ranks 1 2 --rounds 1 --warmup 0 --json out.json    # a quick check
    python bench/expert_parallel.py --train-steps 100     # also: the toy pretraining on 1, 2, 4 ranks, losses compared

The processes share the machine's cores: on a 2-core machine 4 processes cannot run faster than 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import minillama4
from minillama4.cache import kv_cache_bytes
from minillama4.parallel import rank_weight_bytes, shard_model

HIDDEN, EXPERT_FFN, EXPERTS, TOP_K, LAYERS, VOCAB = 256, 512, 16, 1, 4, 4096
BATCH, SEQ = 2, 256
GPUS = {"H100 80 GB": 81559 * 2**20, "H200 141 GB": 143771 * 2**20}  # total memory nvidia-smi reports
HEADROOM = 0.90  # weights + KV cache must fit in this share of it (the rest: activations, CUDA context, allocator)
CONTEXT = 8192  # tokens of KV cache (bf16, batch 1) that must fit besides the weights


def model_config() -> minillama4.Llama4Config:
    return minillama4.Llama4Config.preset("toy").replace(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=EXPERT_FFN, num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K, num_hidden_layers=LAYERS, num_attention_heads=8, num_key_value_heads=2,
        head_dim=32, attention_chunk_size=128, max_position_embeddings=SEQ)


# ------------------------------------------------------------------------------------------------ one rank
def _record_all_to_alls(calls: list) -> None:
    """Wrap dist.all_to_all_single: record (bytes sent to other ranks, bytes received from them, row bytes)."""
    real = dist.all_to_all_single

    def recording(output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False):
        N, r = dist.get_world_size(group), dist.get_rank(group)
        row = input.element_size() * math.prod(input.shape[1:])  # bytes of one row (of a count: 8)
        send = input_split_sizes or [input.shape[0] // N] * N
        recv = output_split_sizes or [output.shape[0] // N] * N
        calls.append(dict(sent=sum(s for d, s in enumerate(send) if d != r) * row,
                          received=sum(s for d, s in enumerate(recv) if d != r) * row,
                          dtype=str(input.dtype)))
        return real(output, input, output_split_sizes, input_split_sizes, group=group, async_op=async_op)

    dist.all_to_all_single = recording


def _rank(rank: int, world: int, store: str, args, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = minillama4.Llama4(model_config()).eval()
    if world > 1:
        shard_model(model, "expert", tokens="own")
    x = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(100 + rank))
    times, cpu = [], []
    with torch.no_grad():
        for i in range(args.warmup + args.rounds):
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            dt, dc = torch.tensor(time.perf_counter() - t0), torch.tensor(time.process_time() - c0)
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)  # the step ends when the slowest rank is done
            dist.all_reduce(dc)  # CPU seconds of all ranks together
            if i >= args.warmup:
                times.append(dt.item()), cpu.append(dc.item())
        result = dict(ms=1e3 * statistics.median(times), cpu_ms=1e3 * statistics.median(cpu))
        if world > 1:  # one more forward, recording every exchange, checked against the routing
            calls = []
            _record_all_to_alls(calls)
            _, routing = model(x, return_routing=True)
            e = EXPERTS // world
            want = []
            for r in routing:  # per MoE layer: the count exchange, dispatch, combine
                mine = torch.bincount(r.indices.flatten() // e, minlength=world)  # my rows for each rank's experts
                R = [torch.empty_like(mine) for _ in range(world)]
                dist.all_gather(R, mine)  # R[s][d]: rows rank s sends to rank d
                out_rows = sum(int(R[rank][d]) for d in range(world) if d != rank)  # mine, leaving
                back_rows = sum(int(R[s][rank]) for s in range(world) if s != rank)  # others', going home
                want += [(world - 1) * e * 8, out_rows * HIDDEN * 4, back_rows * HIDDEN * 4]
            got = [c["sent"] for c in calls]
            assert got == want, (got, want)
            result.update(sent=got, tokens=BATCH * SEQ)
    if rank == 0 or world > 1:
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()  # no rank closes its connections while another still uses them (gloo aborts the process then)
    dist.destroy_process_group()


def run(world: int, args, fn=None) -> list[dict]:
    """fn (default: the throughput and bytes run) on `world` ranks; each rank's saved result."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(fn or _rank, args=(world, os.path.join(tmp, "store"), args, tmp), nprocs=world,
                           start_method="spawn")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world) if
                os.path.exists(os.path.join(tmp, f"rank{r}.pt"))]


def _train_rank(rank: int, world: int, store: str, args, out: str) -> None:
    """The toy pretraining (mini-scout, ci profile) for args.train_steps steps at the recipe's global batch, with
    the balancing loss at args.balance: on one process, or data + expert parallel on `world`."""
    import dataclasses

    from minillama4.course.data import course_tokens
    from minillama4.course.zoo import recipes
    from minillama4.train import seed_everything, train
    from minillama4.train.distributed import train_parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    r = recipes("ci")["mini-scout"]
    tc = dataclasses.replace(r.train, steps=args.train_steps, balance_coef=args.balance,
                             eval_every=args.train_steps)
    train_ids, val_ids = (course_tokens(s, vocab_size=r.config.vocab_size).ids for s in ("train", "val"))
    seed_everything(tc.seed)
    model = minillama4.Llama4(r.config)
    t0 = time.perf_counter()
    fit = train_parallel if world > 1 else train
    hist = fit(model, train_ids, val_ids, tc, progress=False)
    if rank == 0:
        torch.save(dict(train=hist.train_loss, val=hist.val_loss, s=time.perf_counter() - t0),
                   os.path.join(out, "rank0.pt"))
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the arithmetic
def maverick_tables() -> dict:
    mav = minillama4.Llama4Config.preset("maverick")
    D, k, n_moe = mav.hidden_size, mav.num_experts_per_tok, len(mav.moe_layers)
    N = 8
    a2a = k * D * 2 * (N - 1) / N  # bytes a token's rows send off-rank, per direction per MoE layer (bf16, uniform)
    allreduce = 2 * D * 2 * (N - 1) / N  # ring all-reduce of a bf16 row: bytes each rank sends, per token and layer
    volume = dict(dispatch_per_layer=a2a, combine_per_layer=a2a, per_token_all_layers=2 * a2a * n_moe,
                  tensor_parallel_allreduce_per_layer=allreduce, tensor_parallel_per_token=allreduce * n_moe)
    int4 = 0.5 + 4 / 128
    memory = {fmt: rank_weight_bytes(mav, N, eb) for fmt, eb in (("bf16", 2), ("fp8", 1), ("int4", int4))}
    memory["kv_cache_8k"] = kv_cache_bytes(mav, CONTEXT)
    fits = {}
    for name in ("scout", "maverick"):
        cfg = minillama4.Llama4Config.preset(name)
        E, kv = cfg.num_local_experts, kv_cache_bytes(cfg, CONTEXT)
        for fmt, eb in (("bf16", 2), ("fp8", 1), ("int4", int4)):
            for gpu, total in GPUS.items():
                need = lambda n: rank_weight_bytes(cfg, n, eb) + kv  # noqa: E731  this package: the rest replicated
                even = lambda n: (rank_weight_bytes(cfg, 1, eb) + kv) / n  # noqa: E731  everything split N ways
                fewest = lambda fn: next((n for n in range(1, E + 1) if E % n == 0 and fn(n) <= HEADROOM * total),
                                         None)  # noqa: E731
                n = fewest(need)
                fits[name, fmt, gpu] = (n, need(n or E), fewest(even))
    return dict(volume=volume, memory=memory, fits=fits)


def compare_training(args) -> dict:
    """The toy pretraining on 1 and on N ranks at the same global batch: the largest train-loss difference over the
    steps and the final validation losses, with the balancing loss off (the exact case) and at the recipe's 0.01."""
    print(f"\ntoy pretraining (mini-scout, ci profile, global batch 16 × 128), {args.train_steps} steps, "
          "1 thread per rank: largest |train loss(N) − train loss(1)| over the steps, final validation loss")
    res = {}
    for balance in (0.0, 0.01):
        args.balance = balance
        base = None
        for world in args.ranks:
            h = run(world, args, _train_rank)[0]
            base = base or h
            diffs = [abs(a - b) for a, b in zip(base["train"], h["train"])]
            first = next((i + 1 for i, d in enumerate(diffs) if d > 1e-4), None)  # first step differing by > 1e-4
            res[f"balance {balance} / {world}"] = dict(max_train_diff=max(diffs), diffs=diffs, first_above_1e4=first,
                                                       val=h["val"][-1], s=h["s"], final_train=h["train"][-1])
            print(f"  balance_coef {balance:<5} {world} rank(s): max |Δ train| {max(diffs):.2e} (steps 1-5: "
                  f"{max(diffs[:5]):.1e}; first > 1e-4 at step {first}), final train {h['train'][-1]:.4f}, "
                  f"val {h['val'][-1]:.4f}  ({h['s']:.0f} s)", flush=True)
    return res


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="also pretrain the toy model this many steps on each number of ranks and compare the losses")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"model: hidden {HIDDEN}, {EXPERTS} experts top-{TOP_K} + shared, FFN {EXPERT_FFN}, {LAYERS} MoE layers; "
          f"each rank {BATCH} × {SEQ} tokens, forward, 1 thread per rank")
    out = {"ranks": {}}
    print(f"\n{'ranks':>5} {'ms/step':>9} {'tokens/s':>10} {'vs 1':>6} {'CPU ms/step':>12} {'tokens/CPU-s':>13}   "
          "bytes off-rank per token per MoE layer in the dispatch (the combine sends as many back), measured = "
          "computed; uniform routing would give")
    base = None
    for world in args.ranks:
        res = run(world, args)
        ms, cpu_ms = res[0]["ms"], res[0]["cpu_ms"]
        tps, per_cpu = world * BATCH * SEQ / (ms / 1e3), world * BATCH * SEQ / (cpu_ms / 1e3)
        base = base or tps
        line = f"{world:>5} {ms:>9.1f} {tps:>10.0f} {tps / base:>5.2f}× {cpu_ms:>12.1f} {per_cpu:>13.0f}"
        if world > 1:
            dispatch = [s for r in res for s in r["sent"][1::3]]  # every rank's dispatch calls
            per_tok = sum(dispatch) / (world * BATCH * SEQ * LAYERS)
            uniform = TOP_K * HIDDEN * 4 * (world - 1) / world
            line += f"   {per_tok:7.1f} B (all {3 * len(dispatch)} calls asserted); uniform: {uniform:.1f} B"
            out["ranks"][world] = dict(ms=ms, tokens_per_s=tps, cpu_ms=cpu_ms, tokens_per_cpu_s=per_cpu,
                                       bytes_per_token_layer=per_tok, uniform=uniform)
        else:
            out["ranks"][world] = dict(ms=ms, tokens_per_s=tps, cpu_ms=cpu_ms, tokens_per_cpu_s=per_cpu)
        print(line, flush=True)

    t = maverick_tables()
    v, m = t["volume"], t["memory"]
    print("\nMaverick on 8 GPUs, computed (bf16 activations, top-1, uniform routing):")
    print(f"  all-to-all per token per MoE layer: {v['dispatch_per_layer'] / 1024:.2f} KiB out + "
          f"{v['combine_per_layer'] / 1024:.2f} KiB back; all 24 MoE layers: {v['per_token_all_layers'] / 1024:.0f} KiB")
    print(f"  tensor-parallel experts instead: ring all-reduce {v['tensor_parallel_allreduce_per_layer'] / 1024:.2f} KiB"
          f" per token per layer, {v['tensor_parallel_per_token'] / 1024:.0f} KiB over 24 layers")
    print("  weights per GPU: " + ", ".join(f"{fmt} {m[fmt] / 1e9:.1f} GB" for fmt in ("bf16", "fp8", "int4"))
          + f"; KV cache at 8K tokens: {m['kv_cache_8k'] / 2**30:.2f} GiB (replicated attention)")
    print(f"\nfewest GPUs (N divides E) for weights + {CONTEXT}-token KV cache ≤ {HEADROOM:.0%} of GPU memory; "
          "expert parallel as here (all but the routed experts replicated), and if every weight were split N ways:")
    for (name, fmt, gpu), (n, need, even) in t["fits"].items():
        print(f"  {name:9s} {fmt:5s} {gpu:12s} {n if n else '—':>3}  ({need / 2**30:5.1f} GiB per GPU)   "
              f"all split: {even if even else '—'}")
    out["maverick"] = dict(volume=v, memory=m)
    out["fits"] = {" / ".join(k): v for k, v in t["fits"].items()}
    if args.train_steps:
        out["training"] = compare_training(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
