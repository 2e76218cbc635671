"""What each rank runs in tests/test_parallel.py: checks that run on every rank of a gloo process group.

`launch(n, names, ctx)` starts n processes (forkserver: torch is imported once, not once per rank), joins them in
a gloo group and runs the named checks in order on every rank. A check returns a value (or raises); the parent
gets {check name: (value, None) or (None, traceback)} from every rank, so one failing check does not hide the others.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def _worker(rank: int, world: int, store: str, names: list[str], ctx: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    results = {}
    for name in names:
        try:
            results[name] = (CHECKS[name](rank, world, ctx), None)
        except Exception:
            results[name] = (None, traceback.format_exc())
    dist.barrier()  # no rank closes its connections while another is still in a collective
    dist.destroy_process_group()
    results["threads_after_destroy"] = (native_threads(), None)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))


def native_threads() -> list[str] | None:
    """The names of this process's threads, C++ ones included (gloo's are gloo_tcp_loop and pt_gloo_runloop);
    None where /proc is missing (not Linux)."""
    if not os.path.isdir("/proc/self/task"):
        return None
    names = []
    for t in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{t}/comm") as f:  # OSError: it just ended
            names.append(f.read().strip())
    return names


def launch(n: int, names: list[str], ctx: dict) -> list[dict]:
    """Run the checks `names` on n ranks; returns each rank's results."""
    try:
        mp.set_forkserver_preload(["torch", "minillama4", __name__])
    except RuntimeError:
        pass  # the server already runs, with these modules
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(n, os.path.join(tmp, "store"), names, ctx, tmp), nprocs=n,
                           start_method="forkserver")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(n)]


# ------------------------------------------------------------------------------------------------ helpers
def rel_err(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / a.float().abs().max()).item()


def ids(batch: int, T: int, seed: int = 0, vocab: int = 160) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))


def _logits_and_tokens(ckpt: str, kind, tokens: str, rank: int, quantize=None):
    """(max relative logit error vs one process, greedy tokens equal) for one checkpoint and split."""
    import minillama4
    from minillama4.parallel import shard_model

    one = minillama4.from_pretrained(ckpt, quantize=quantize)
    if tokens == "own":  # each rank its own rows: routing, counts and splits differ between ranks
        many = shard_model(minillama4.from_pretrained(ckpt, quantize=quantize), "expert", tokens="own")
        x = ids(2, 37, seed=rank)
    else:
        many = minillama4.from_pretrained(ckpt, quantize=quantize, expert_parallel=kind)
        x = ids(2, 37)
    with torch.no_grad():
        err = rel_err(one(x), many(x))
    prompt = x[:, :6]
    same = torch.equal(one.generate(prompt, 12), many.generate(prompt, 12))
    return err, same


# ------------------------------------------------------------------------------------------------ checks
@check
def logits_and_greedy(rank, world, ctx):
    """Every checkpoint × every way of splitting: logits and greedy tokens of one process."""
    out = {}
    for name, ckpt in ctx["ckpts"].items():
        for kind, tokens in (("expert", "replicated"), ("expert", "own"), ("tensor", "replicated")):
            out[name, kind, tokens] = _logits_and_tokens(ckpt, kind, tokens, rank)
    return out


@check
def int4(rank, world, ctx):
    return {kind: _logits_and_tokens(ctx["int4_ckpt"], kind, "replicated", rank, quantize="int4")
            for kind in ("expert", "tensor")}


@check
def reads_only_its_part(rank, world, ctx):
    """Spy on the safetensors files while loading: no expert tensor is read whole, and the expert elements read
    add up to this rank's share (float and int4 loaders)."""
    import minillama4
    import minillama4.checkpoint as ck

    real = ck.safe_open
    whole, read = [], {}

    class Slice:
        def __init__(self, sl, name):
            self.sl, self.name = sl, name

        def get_shape(self):
            return self.sl.get_shape()

        def get_dtype(self):
            return self.sl.get_dtype()

        def __getitem__(self, index):
            t = self.sl[index]
            read[self.name] = read.get(self.name, 0) + t.numel()
            return t

    class File:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_slice(self, name):
            return Slice(self.f.get_slice(name), name)

        def get_tensor(self, name):
            whole.append(name)
            return self.f.get_tensor(name)

    ck.safe_open = File
    try:
        out = {}
        for quantize in (None, "int4"):
            whole.clear(), read.clear()
            m = minillama4.from_pretrained(ctx["int4_ckpt"], expert_parallel=True, quantize=quantize)
            c = m.config
            experts = [n for n in read if ".experts." in n]
            out[quantize] = dict(whole_experts=[n for n in whole if ".experts." in n],
                                 read=sorted(read[n] for n in experts), n_expert_tensors=len(experts),
                                 share=c.num_local_experts // world * c.hidden_size * 2 * c.intermediate_size,
                                 full=c.num_local_experts * c.hidden_size * 2 * c.intermediate_size,
                                 moe_layers=len(c.moe_layers))
        return out
    finally:
        ck.safe_open = real


def _tiny_model(seed: int = 0, experts: int = 4, hidden: int = 32):
    from minillama4 import Llama4, Llama4Config

    torch.manual_seed(seed)
    cfg = Llama4Config.preset("toy").replace(num_hidden_layers=2, num_local_experts=experts, num_experts_per_tok=2,
                                             hidden_size=64, intermediate_size=hidden, vocab_size=96)
    return Llama4(cfg)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@check
def gradients(rank, world, ctx):
    """One training step, three ways against one process at the same global batch: data + expert parallel (DDP,
    each rank its rows), expert parallel on replicated tokens, tensor-parallel experts. Returns the largest
    relative difference of every gradient (experts: against this rank's part of the one-process gradient) and of
    the total gradient norm that clipping uses."""
    import copy

    import torch.nn.functional as F
    from minillama4.parallel import clip_grad_norm_, data_parallel, rank_parts, shard_model

    one = _tiny_model()
    x, y = ids(4, 16, 1, 96), ids(4, 16, 2, 96)

    def ce(model, x, y):
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    ce(one, x, y).backward()
    want = _grads(one)
    want_norm = torch.nn.utils.get_total_norm(list(want.values()))
    out = {}
    for how in ("data+expert", "expert", "tensor"):
        many = copy.deepcopy(one)
        many.zero_grad(set_to_none=True)
        kind = "tensor" if how == "tensor" else "expert"
        shard_model(many, kind, tokens="own" if how == "data+expert" else "replicated")
        if how == "data+expert":
            B = x.shape[0] // world
            ddp = data_parallel(many)  # kept alive through the backward: its hooks do the all-reduce
            ce(ddp, x[rank * B:(rank + 1) * B], y[rank * B:(rank + 1) * B]).backward()
        else:
            ce(many, x, y).backward()
        # the gradient norm that clipping uses: every rank's experts counted once (max_norm too large to clip)
        errs = {"total norm": rel_err(want_norm, clip_grad_norm_(many, 1e9))}
        parts = rank_parts(one.config, kind, world, rank)
        for n, g in _grads(many).items():
            suffix = n.split("feed_forward.")[-1]
            ref = parts[suffix].read(want[n]) if suffix in parts and "feed_forward" in n else want[n]
            errs[n] = rel_err(ref, g)
        out[how] = (errs, len(want) + 1)
    return out


@check
def training_matches_one_process(rank, world, ctx):
    """pretrain.train for a few steps with clipping active: data + expert parallel vs one process, same global
    batch. Returns both loss curves."""
    from minillama4.train.distributed import train_parallel
    from minillama4.train.pretrain import TrainConfig, train

    cfg = TrainConfig(steps=4, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=1, grad_clip=0.5, balance_coef=0.0,
                      eval_every=4, eval_batches=1)
    stream = ids(1, 4000, 3, 96)[0]
    one = train(_tiny_model(), stream, stream, cfg, progress=False)
    many = train_parallel(_tiny_model(), stream, stream, cfg, progress=False)
    return one.train_loss, many.train_loss, one.val_loss, many.val_loss


@check
def uneven_loads(rank, world, ctx):
    """Every token routed to experts 1 and 2 (top-2 of 8): expert 0 receives nothing, and so do all ranks past the
    first (2 ranks) or the second (4 ranks). Data + expert parallel, each rank its rows: the loss and the experts'
    gradients still equal one process's."""
    import copy

    import torch.nn.functional as F
    from minillama4.parallel import data_parallel, rank_parts, shard_model

    one = _tiny_model(1, experts=8)
    for layer in one.layers:
        bias = torch.full((8,), -1e4)
        bias[1:3] = 0.0
        layer.feed_forward.router.selection_bias = bias
    many = shard_model(copy.deepcopy(one), "expert", tokens="own")
    ddp = data_parallel(many)
    x, y = ids(4, 9, 4, 96), ids(4, 9, 5, 96)
    B = 4 // world
    loss_one = F.cross_entropy(one(x).flatten(0, 1), y.flatten())
    logits, routing = ddp(x[rank * B:(rank + 1) * B], return_routing=True)
    loss_many = F.cross_entropy(logits.flatten(0, 1), y[rank * B:(rank + 1) * B].flatten())
    loss_one.backward(), loss_many.backward()
    loss_all = loss_many.detach().clone()
    dist.all_reduce(loss_all)
    part = rank_parts(one.config, "expert", world, rank)["experts.gate_up_proj"]
    errs = []
    for a, b in zip(one.layers, many.layers):
        g_one = part.read(a.feed_forward.experts.gate_up_proj.grad)
        g_many = b.feed_forward.experts.gate_up_proj.grad
        g_many = torch.zeros_like(g_one) if g_many is None else g_many  # no rows here: no gradient at all
        errs.append((g_one - g_many).abs().max().item())
    used = sorted({int(e) for r in routing for e in r.indices.flatten()})
    return dict(used=used, loss=(loss_one.item(), loss_all.item() / world), grad_err=max(errs),
                grad_max=one.layers[0].feed_forward.experts.gate_up_proj.grad.abs().max().item())


@check
def bad_input(rank, world, ctx):
    """Each mistake raises a ValueError on every rank (none is left waiting); returns the messages."""
    import minillama4
    from minillama4.parallel import shard_model

    def message(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    c = ctx["ckpts"]
    return dict(
        not_divisible=message(lambda: minillama4.from_pretrained(ctx["odd_ckpt"], expert_parallel=True)),
        tensor_not_divisible=message(lambda: shard_model(_tiny_model(hidden=31), "tensor")),
        other_config=message(lambda: minillama4.from_pretrained(c["scout"] if rank == 0 else c["maverick"],
                                                                expert_parallel=True)),
        other_weights=message(lambda: minillama4.from_pretrained(c["scout"] if rank == 0 else ctx["scout_seed1"],
                                                                 expert_parallel=True)),
        bad_kind=message(lambda: minillama4.from_pretrained(c["scout"], expert_parallel="pipeline")),
    )


@check
def chat(rank, world, ctx):
    """`minillama4 chat` on every rank, reading stdin: only rank 0 reads it and prints."""
    from minillama4.cli import main

    class NoInput(io.StringIO):
        def readline(self, *a):
            raise AssertionError(f"rank {rank} read stdin")

    stdin, out = (io.StringIO(ctx["chat_input"]) if rank == 0 else NoInput()), io.StringIO()
    old = sys.stdin
    sys.stdin = stdin
    try:
        with contextlib.redirect_stdout(out):
            code = main(["chat", "--checkpoint", ctx["chat_ckpt"], *ctx["chat_args"]])
    finally:
        sys.stdin = old
    return code, out.getvalue()
