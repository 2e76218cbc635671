"""Llama 4 over several processes: the routed experts split across the ranks of a torch.distributed group.

Maverick's routed experts are 96% of its 400 B parameters; no single GPU holds them. Expert parallelism gives each
of N ranks e = E/N whole experts (rank r holds experts r·e … r·e + e - 1) and sends every (token, expert) row to the
rank that holds its expert, and back, with all-to-all. Everything else (embeddings, attention, router, shared
expert, dense layers, lm_head) is replicated: every rank holds it whole.

One MoE layer, 2 ranks, 4 experts (e = 2 per rank), top-1, each rank with its own tokens:

    rank 0: tokens a b c                              rank 1: tokens d f
    router      a→3  b→0  c→2                         router      d→1  f→0
    sort        b | c a        (expert 0 | 2 3)       sort        f d |      (expert 0 1 |)
    send counts 1 | 2          (to rank 0 | rank 1)   send counts 2 | 0
                      ╲____________ all-to-all: counts first, then rows __________╱
    received    b | f d        (from rank 0 | 1)      received    c a |      (from rank 0 | 1)
    by expert   b f | d        (expert 0 | 1)         by expert   c | a      (expert 2 | 3)
                experts 0, 1 run                                  experts 2, 3 run
                      ╱‾‾‾‾ all-to-all back: the same splits, swapped ‾‾‾‾╲
    combine     out = shared(x) + Σ rows, per token   combine     the same for d f

Step by step on each rank (steps 1 and 6 are `moe.py`'s, unchanged):
1. route, and sort the (token, expert) rows by expert (`moe.sort_by_expert`). Experts sit in blocks of e, so the
   rows for each destination rank are contiguous, and grouped by expert within it;
2. exchange the counts: counts_E [E] → all-to-all → recv_Ne [N, e], the rows rank s will send to my j-th expert.
   `send_counts` and recv_Ne.sum(1) are the (uneven, possibly zero) split sizes of the row exchange;
3. exchange the rows: x_ND → all-to-all → x_RD, grouped by source rank, then by expert;
4. regroup them by expert (`expert_major_order`), run my e experts, put the rows back in arrival order;
5. send them back: y_RD → all-to-all with the splits swapped → y_ND, in the order x_ND left in;
6. combine (`moe.combine`, the scatter-add) and add the shared expert.
Autograd flows through the exchange: the backward of an all-to-all is the all-to-all with the splits swapped.

Whose tokens (`tokens=`):
  "own"         every rank has its own tokens (data parallel training: each rank a slice of the batch);
  "replicated"  every rank runs the same tokens (one prompt: `generate`, the CLI under torchrun). At each MoE layer
                rank r sends only a contiguous 1/N of the rows through steps 1-5, and an all-gather puts the routed
                experts' output back together on every rank.

Meta's reference code splits the experts the other way (`TensorParallelMoE`, `kind="tensor"`): every rank holds
every expert but only F/N of its hidden units (gate and up by columns, down by rows), runs every token, and one
all-reduce sums the partial outputs. No routing-dependent exchange and no rank waits on a popular expert, which
suits small-batch decoding; but every matmul is F/N wide, every rank must see every token, and the all-reduce moves
a full row per token whatever k is. Expert parallelism is the default here because it is what training and
large-batch serving use (torchtitan, vLLM's --enable-expert-parallel): ranks can hold different tokens, each
expert's matmuls stay full width, a token's row moves only to the k ranks that hold its experts, and a rank reads
only its own experts' bytes from the checkpoint (`checkpoint_view`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .ffn import ExpertBank, SwiGLU
from .moe import combine, sort_by_expert
from .router import Router, RouterOutput


# torch.distributed.nn.functional is imported here, before any process group exists. Its functions take
# `group=group.WORLD` as a default argument, bound when the module is first imported. torch imports it on its own
# (through torch._dynamo) the first time a model is built on the meta device, as `from_pretrained` does. If that
# happened after init_process_group, those defaults would hold the group for good: destroy_process_group could not
# free it, and gloo's worker threads would run on into interpreter shutdown. A worker that releases a finished
# collective's tensors there needs the GIL, which a finalizing interpreter never gives back, and the process aborts
# ("terminate called without an active exception"). Imported first, the defaults hold None. `import minillama4`
# imports this module, so a script that imports the package before it joins a group is covered.
if dist.is_available():  # (some builds of torch have no torch.distributed)
    import torch.distributed.nn.functional  # noqa: F401


# --------------------------------------------------------------------------------------------- the arithmetic
def block_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Items [lo, hi) of `rank` when n items (experts, hidden units) are cut in N contiguous blocks of n/N."""
    b = n // world_size
    return rank * b, (rank + 1) * b


def send_counts(counts_E: torch.Tensor, world_size: int) -> torch.Tensor:
    """Rows this rank sends to each rank: rank s holds the s-th block of E/N experts, so it receives the counts of
    that block, summed. counts_E [E] → [N]."""
    return counts_E.view(world_size, -1).sum(1)


def expert_major_order(recv_counts_Ne: torch.Tensor) -> torch.Tensor:
    """The received rows arrive grouped by source rank, then by expert: recv_counts_Ne[s, j] rows from rank s for
    my j-th expert. The experts want them grouped by expert. Label each row with its expert and sort stably (rows
    of one expert keep their source order): order_R[i] = the received row that goes i-th."""
    N, e = recv_counts_Ne.shape
    expert_R = torch.arange(e, device=recv_counts_Ne.device).repeat(N).repeat_interleave(recv_counts_Ne.reshape(-1))
    return torch.argsort(expert_R, stable=True)


def rank_weight_bytes(config, world_size: int, expert_bytes: float = 2.0, other_bytes: float = 2.0) -> int:
    """Bytes of weights on each rank under expert parallelism: E/N routed experts in every MoE layer, and everything
    else whole (the shared expert, attention, router, norms, dense layers, embeddings, lm_head). expert_bytes: per
    routed or shared expert weight (2 = bf16, 0.53125 = int4 with a float32 scale per 128); other_bytes: per other
    weight."""
    D, F = config.hidden_size, config.intermediate_size
    n_moe = len(config.moe_layers)
    routed = n_moe * config.num_local_experts * 3 * D * F  # gate, up, down of every routed expert
    shared = n_moe * 3 * D * F
    other = config.num_parameters() - routed - shared
    return round((routed // world_size + shared) * expert_bytes + other * other_bytes)


# --------------------------------------------------------------------------------------------- the collectives
def _all_to_all(x: torch.Tensor, recv_splits: list[int], send_splits: list[int], group) -> torch.Tensor:
    """The first send_splits[0] rows of x go to rank 0, the next send_splits[1] to rank 1, …; from each rank s come
    recv_splits[s] rows, stacked in rank order."""
    out = x.new_empty(sum(recv_splits), *x.shape[1:])
    dist.all_to_all_single(out, x.contiguous(), recv_splits, send_splits, group=group)
    return out


class _AllToAll(torch.autograd.Function):
    """The row exchange, differentiable: the gradients go back the way the rows came (the splits swapped)."""

    @staticmethod
    def forward(ctx, x_ND, recv_splits, send_splits, group):
        ctx.splits, ctx.group = (recv_splits, send_splits), group
        return _all_to_all(x_ND, recv_splits, send_splits, group)

    @staticmethod
    def backward(ctx, grad_RD):
        recv_splits, send_splits = ctx.splits
        return _all_to_all(grad_RD, send_splits, recv_splits, ctx.group), None, None, None


class _CopyToRanks(torch.autograd.Function):
    """Forward: x as it is (every rank has the same). Backward: the gradient summed over the ranks, because each
    rank computed only its part of what depends on x (Megatron's "f")."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _SumOverRanks(torch.autograd.Function):
    """Forward: the ranks' partial results summed (all-reduce). Backward: the gradient as it is (Megatron's "g")."""

    @staticmethod
    def forward(ctx, x, group):
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _GatherRows(torch.autograd.Function):
    """Forward: every rank's block of rows, stacked in rank order on every rank (all-gather; blocks padded to the
    largest). Backward: this rank's block of the gradient (every rank holds the same whole gradient)."""

    @staticmethod
    def forward(ctx, x_SD, row_range, num_rows, group):
        ctx.row_range = row_range
        N, S = dist.get_world_size(group), -(-num_rows // dist.get_world_size(group))
        padded = torch.cat([x_SD, x_SD.new_zeros(S - x_SD.shape[0], *x_SD.shape[1:])])
        blocks = [torch.empty_like(padded) for _ in range(N)]
        dist.all_gather(blocks, padded, group=group)
        return torch.cat(blocks)[:num_rows]

    @staticmethod
    def backward(ctx, grad_TD):
        a, b = ctx.row_range
        return grad_TD[a:b], None, None, None


def exchange(local: nn.Module, x_ND: torch.Tensor, counts_E: torch.Tensor, group) -> torch.Tensor:
    """Steps 2-5: rows sorted by expert (counts_E[e] rows for expert e, all E experts) → each row's expert output,
    computed on the rank that holds its expert. `local` holds this rank's experts (an `ExpertBank` or an int4 bank)."""
    N = dist.get_world_size(group)
    e = counts_E.shape[0] // N
    recv_Ne = _all_to_all(counts_E, [e] * N, [e] * N, group).view(N, e)  # 2. the counts
    send, recv = send_counts(counts_E, N).tolist(), recv_Ne.sum(1).tolist()
    x_RD = _AllToAll.apply(x_ND, recv, send, group)  # 3. the rows
    order_R = expert_major_order(recv_Ne)  # 4. by expert, run, back in arrival order
    y_sorted = local.forward_sorted(x_RD.index_select(0, order_R), recv_Ne.sum(0))
    y_RD = torch.zeros_like(y_sorted).index_copy(0, order_R, y_sorted)
    return _AllToAll.apply(y_RD, send, recv, group)  # 5. home


# --------------------------------------------------------------------------------------------- the MoE blocks
def _rank(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("expert parallelism needs an initialised torch.distributed process group: launch with "
                         "torchrun and call torch.distributed.init_process_group (gloo on CPU, nccl on GPU) first")
    return dist.get_world_size(group), dist.get_rank(group)


class ExpertParallelMoE(nn.Module):
    """A Llama 4 MoE block with its routed experts spread over the ranks of `group`: `experts` holds this rank's
    e = E/N experts [lo, hi); router and shared expert are whole. Parameter names as in `moe.MoE`."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, group=None, tokens: str = "replicated"):
        super().__init__()
        N, r = _rank(group)
        if num_experts % N:
            raise ValueError(f"{num_experts} experts cannot be split evenly over {N} ranks: the world size must "
                             "divide num_local_experts")
        if tokens not in ("own", "replicated"):
            raise ValueError(f"tokens must be 'own' or 'replicated', got {tokens!r}")
        self.group, self.tokens, self.num_experts = group, tokens, num_experts
        self.lo, self.hi = block_range(num_experts, N, r)
        self.router = Router(dim, num_experts, top_k)
        self.experts = ExpertBank(num_experts // N, dim, hidden)  # experts lo … hi - 1
        self.shared_expert = SwiGLU(dim, hidden)

    def routed(self, x_TD: torch.Tensor, indices_TK: torch.Tensor, scores_TK: torch.Tensor) -> torch.Tensor:
        """Steps 1-6 on these rows, without the shared expert: Σ over each row's experts, wherever they live."""
        x_ND, token_N, counts_E = sort_by_expert(x_TD, indices_TK, scores_TK, self.num_experts)
        y_ND = exchange(self.experts, x_ND, counts_E, self.group)
        return combine(y_ND, token_N, x_TD.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        x_TD = x.reshape(-1, x.shape[-1])
        routing = self.router(x_TD)
        if self.tokens == "own":
            routed_TD = self.routed(x_TD, routing.indices, routing.scores)
        else:  # the same rows on every rank: each sends its block [a, b); the others' blocks come by all-gather
            N, r = _rank(self.group)
            T = x_TD.shape[0]
            S = -(-T // N)  # rows per block; the last blocks may be shorter, or empty
            a, b = min(r * S, T), min((r + 1) * S, T)
            # only this rank's rows reach the experts from here: their gradients are summed over the ranks
            x_in, scores = _CopyToRanks.apply(x_TD, self.group), _CopyToRanks.apply(routing.scores, self.group)
            routed_TD = _GatherRows.apply(self.routed(x_in[a:b], routing.indices[a:b], scores[a:b]), (a, b), T,
                                          self.group)
        # the shared expert is replicated like attention: every rank runs it on all of its rows
        return (self.shared_expert(x_TD) + routed_TD).view_as(x), routing

    def sharded_parameters(self) -> list[nn.Parameter]:
        """The parameters that differ between ranks (this rank's experts)."""
        return list(self.experts.parameters())


class TensorParallelMoE(nn.Module):
    """Meta's split: every rank holds every routed expert and the shared expert, but only hidden units
    [lo, hi) = its F/N of each (gate and up columns, down rows). All ranks run all tokens on their slices; one
    all-reduce sums the partial outputs (SwiGLU is elementwise in F, so the slices' sum is the whole)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, group=None):
        super().__init__()
        N, r = _rank(group)
        if hidden % N:
            raise ValueError(f"intermediate_size={hidden} cannot be split evenly over {N} ranks")
        self.group, self.num_experts = group, num_experts
        self.lo, self.hi = block_range(hidden, N, r)  # hidden units, in blocks of F/N
        self.router = Router(dim, num_experts, top_k)
        self.experts = ExpertBank(num_experts, dim, hidden // N)
        self.shared_expert = SwiGLU(dim, hidden // N)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        x_TD = x.reshape(-1, x.shape[-1])
        routing = self.router(x_TD)
        x_ND, token_N, counts_E = sort_by_expert(x_TD, routing.indices, routing.scores, self.num_experts)
        # the slices see x whole; in the backward their parts of x's gradient are summed over the ranks
        y_ND = self.experts.forward_sorted(_CopyToRanks.apply(x_ND, self.group), counts_E)
        partial_TD = self.shared_expert(_CopyToRanks.apply(x_TD, self.group)) + combine(y_ND, token_N, x_TD.shape[0])
        return _SumOverRanks.apply(partial_TD, self.group).view_as(x), routing

    def sharded_parameters(self) -> list[nn.Parameter]:
        return list(self.experts.parameters()) + list(self.shared_expert.parameters())


# --------------------------------------------------------------------------------------------- which part a rank holds
@dataclass(frozen=True)
class Part:
    """This rank's part of one weight: the blocks [a, b) along `dim`, side by side. shape: the whole weight's."""
    shape: tuple[int, ...]
    dim: int
    blocks: tuple[tuple[int, int], ...]

    @property
    def local_shape(self) -> tuple[int, ...]:
        s = list(self.shape)
        s[self.dim] = sum(b - a for a, b in self.blocks)
        return tuple(s)

    def read(self, w, e: int | None = None) -> torch.Tensor:
        """This rank's part of w: a tensor, or a safetensors slice (then only these bytes are read from the file).
        With e: only the e-th expert this rank holds (w is an expert tensor [E, …])."""
        pieces = []
        for a, b in self.blocks:
            index = [slice(None)] * len(self.shape)
            index[self.dim] = slice(a, b)
            if e is not None:
                index[0] = a + e if self.dim == 0 else e
            pieces.append(w[tuple(index)])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, self.dim - (e is not None))


def rank_parts(config, kind: str, world_size: int, rank: int) -> dict[str, Part]:
    """Which part of each MoE weight this rank holds, by name within an MoE block."""
    D, F, E = config.hidden_size, config.intermediate_size, config.num_local_experts
    if kind == "expert":
        lo, hi = block_range(E, world_size, rank)
        return {"experts.gate_up_proj": Part((E, D, 2 * F), 0, ((lo, hi),)),
                "experts.down_proj": Part((E, F, D), 0, ((lo, hi),))}
    a, b = block_range(F, world_size, rank)  # hidden units [a, b) of every expert
    return {"experts.gate_up_proj": Part((E, D, 2 * F), 2, ((a, b), (F + a, F + b))),  # gate | up columns
            "experts.down_proj": Part((E, F, D), 1, ((a, b),)),
            "shared_expert.gate_proj.weight": Part((F, D), 0, ((a, b),)),
            "shared_expert.up_proj.weight": Part((F, D), 0, ((a, b),)),
            "shared_expert.down_proj.weight": Part((D, F), 1, ((a, b),))}


def _config_hash(config) -> str:
    return hashlib.sha256(json.dumps(config.to_hf(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_on_all_ranks(value: str, what: str, group=None) -> None:
    """Raise on every rank (so none is left waiting) unless all ranks hold the same value."""
    values = [None] * dist.get_world_size(group)
    dist.all_gather_object(values, value, group=group)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise ValueError(f"ranks disagree on {what}: rank 0 has {values[0]}, rank(s) {odd} have "
                         f"{[values[r] for r in odd]}; every rank must load the same checkpoint and config")


def shard_model(model: nn.Module, kind: str = "expert", group=None, tokens: str = "replicated") -> nn.Module:
    """Replace every MoE block of a Llama4 by this rank's share of it, in place; returns the model.
    kind: "expert" (E/N whole experts per rank) or "tensor" (F/N of every expert). tokens (expert kind): "own" or
    "replicated", see the module docstring. A model on the meta device stays there (`from_pretrained` fills it);
    otherwise each rank copies its part of the weights and drops the rest."""
    if kind not in ("expert", "tensor"):
        raise ValueError(f"kind must be 'expert' or 'tensor', got {kind!r}")
    N, r = _rank(group)
    c = model.config
    same_on_all_ranks(_config_hash(c), "the model config (hash of config.json)", group)
    parts = rank_parts(c, kind, N, r)
    for layer in model.layers:
        if not layer.is_moe:
            continue
        old, args = layer.feed_forward, (c.hidden_size, c.intermediate_size, c.num_local_experts, c.num_experts_per_tok)
        with torch.device(old.router.weight.device):
            new = ExpertParallelMoE(*args, group, tokens) if kind == "expert" else TensorParallelMoE(*args, group)
        new.to(old.router.weight.dtype)
        if not old.router.weight.is_meta:
            full = old.state_dict()
            with torch.no_grad():
                for name, t in new.state_dict().items():
                    t.copy_(parts[name].read(full[name]) if name in parts else full[name])
            new.router.selection_bias = old.router.selection_bias.clone()
        layer.feed_forward = new
    return model


def sharded_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of `model` that differ between ranks (experts, or expert slices); empty on one process."""
    return [p for m in model.modules() if isinstance(m, (ExpertParallelMoE, TensorParallelMoE))
            for p in m.sharded_parameters()]


def _group_of(model: nn.Module):
    return next(m.group for m in model.modules() if isinstance(m, (ExpertParallelMoE, TensorParallelMoE)))


# --------------------------------------------------------------------------------------------- loading per rank
class _PartSlice:
    """A safetensors slice of a weight as this rank sees it: its shape is the part's, indexing reads from the
    file only the bytes of this rank's part."""

    def __init__(self, sl, part: Part, file, name: str):
        from .checkpoint import CheckpointError

        got = tuple(sl.get_shape())
        if got != part.shape:
            raise CheckpointError(f"{file.name}: tensor {name} has shape {list(got)}, expected {list(part.shape)} "
                                  "from config.json")
        self.sl, self.part = sl, part

    def get_shape(self):
        return list(self.part.local_shape)

    def get_dtype(self):
        return self.sl.get_dtype()

    def __getitem__(self, e: int) -> torch.Tensor:  # one expert, as the int4 loader reads them
        return self.part.read(self.sl, e)

    def read_all(self) -> torch.Tensor:
        return self.part.read(self.sl)


class _RankView:
    """An open safetensors file as this rank sees it: expert weights show only this rank's part."""

    def __init__(self, f, file, parts: dict[str, Part]):
        self.f, self.file, self.parts = f, file, parts

    def get_slice(self, name: str):
        sl = self.f.get_slice(name)
        return _PartSlice(sl, self.parts[name], self.file, name) if name in self.parts else sl

    def get_tensor(self, name: str) -> torch.Tensor:
        return self.get_slice(name).read_all() if name in self.parts else self.f.get_tensor(name)


def checkpoint_view(model: nn.Module, files: dict, found: dict[str, str]):
    """For `from_pretrained` on a sharded model: a function that turns an open shard into this rank's view of it
    (expert tensors read in part). Checks first that every rank reads the same checkpoint: the bytes of the
    routers and the final norm, which every rank holds whole, must hash the same everywhere."""
    from .checkpoint import _open

    group = _group_of(model)
    N, r = _rank(group)
    parts = {}
    for i, layer in enumerate(model.layers):
        if layer.is_moe:
            kind = "expert" if isinstance(layer.feed_forward, ExpertParallelMoE) else "tensor"
            for name, part in rank_parts(model.config, kind, N, r).items():
                parts[found[f"layers.{i}.feed_forward.{name}"]] = part
    h = hashlib.sha256()
    for ours in sorted(n for n in found if n.endswith("router.weight") or n == "norm.weight"):
        with _open(files[found[ours]]) as f:
            h.update(f.get_tensor(found[ours]).contiguous().view(torch.uint8).numpy().tobytes())
    same_on_all_ranks(h.hexdigest()[:16], "the checkpoint (hash of the router and norm weights)", group)
    return lambda f, file: _RankView(f, file, parts)


# --------------------------------------------------------------------------------------------- training
def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ over all of `model`'s parameters. With experts spread over ranks the norm
    counts every rank's experts (their squared norms summed over the ranks), so every rank clips by the same
    factor and the replicated weights stay identical."""
    sharded = sharded_parameters(model)
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    ids = {id(p) for p in sharded}
    grads = lambda ps: [p.grad for p in ps if p.grad is not None]  # noqa: E731
    local_sq = torch.nn.utils.get_total_norm(grads(sharded)) ** 2
    dist.all_reduce(local_sq, group=_group_of(model))
    total = (torch.nn.utils.get_total_norm(grads(p for p in model.parameters() if id(p) not in ids)) ** 2
             + local_sq).sqrt()
    torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, total)
    return total


def data_parallel(model: nn.Module) -> nn.Module:
    """Data parallel training over the ranks that share the experts (tokens="own"): DDP averages the gradients of
    the replicated weights over the ranks. The experts stay out of DDP (each rank holds different ones): their
    gradients already hold every rank's tokens, brought back by the all-to-all's backward, summed; dividing by N
    gives them DDP's average too."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    group = _group_of(model)
    N = dist.get_world_size(group)
    sharded = {id(p) for p in sharded_parameters(model)}
    # DDP's documented way to leave parameters out of its all-reduce
    DDP._set_params_and_buffers_to_ignore_for_model(model, [n for n, p in model.named_parameters() if id(p) in sharded])
    for p in sharded_parameters(model):
        p.register_hook(lambda g: g / N)
    return DDP(model, process_group=group)


def this_ranks_rows(model: nn.Module, *batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under data parallelism (a DDP model) this rank's contiguous block of the batch's rows; otherwise the batch."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not isinstance(model, DDP):
        return batch
    N, r = dist.get_world_size(model.process_group), dist.get_rank(model.process_group)
    B = batch[0].shape[0]
    if B % N:
        raise ValueError(f"a batch of {B} rows cannot be split evenly over {N} data-parallel ranks")
    return tuple(t[r * B // N:(r + 1) * B // N] for t in batch)


def init_process_group(device: str = "cpu") -> str:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR …):
    gloo on CPU, nccl on CUDA. Returns this rank's device ("cuda" becomes cuda:LOCAL_RANK)."""
    if torch.device(device).type == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return device
