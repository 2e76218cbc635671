"""A decode step that never waits for the host: compiled whole, and on a GPU replayed as one CUDA graph.

An eager decode step is a few hundred small kernels per token, each launched from Python; at batch 1 on a GPU the
launches, not the weights, can set the pace. Two things remove them:

1. `torch.compile(fullgraph=True)` turns the step (embedding → every layer → lm_head) into one graph of fused
   kernels. "fullgraph" makes any graph break an error, so nothing in the step may depend on a number read back
   from the device. The step therefore runs on a `StaticDecode` view of the KV cache (the position is a device
   tensor; every slot is read under a mask) and the MoE layers pick their experts by index (`forward_gathered`).
2. On CUDA the compiled step is recorded once as a CUDA graph and replayed for every later token: one launch per
   token. The graph reads its inputs from fixed tensors (`ids_B1`, `pos_1`), which each call fills first.

    step = DecodeStep(model, cache)       # after the prefill filled the cache
    logits_BV = step(next_ids_B1)         # one token per row; the cache advances by one

The prefill (many tokens, once per request) stays eager.
"""

from __future__ import annotations

import torch

from .cache import KVCache, StaticDecode
from .moe import MoE


def check_compilable(model, batch_size: int, backend: str = "inductor") -> None:
    """A ValueError naming the reason if a decode step of this model and batch cannot be compiled whole."""
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ValueError(f"compile backend {backend!r} is not a torch.compile backend (e.g. 'inductor', the default, "
                         "or 'aot_eager')")
    for i, layer in enumerate(model.layers):
        if not layer.is_moe:
            continue
        ff = layer.feed_forward
        if not isinstance(ff, MoE):
            raise ValueError(f"compile=True: layer {i}'s MoE is a {type(ff).__name__} (experts spread over processes): "
                             "its all-to-all exchanges counts on the host; a compiled step runs on one process only")
        rows, limit = batch_size * ff.router.top_k, getattr(ff.experts, "gather_rows", 0)
        if not limit:
            raise ValueError(f"compile=True: layer {i}'s experts ({type(ff.experts).__name__}) cannot pick their "
                             "weights by index, so a decode step would read counts back to the host")
        if rows > limit:
            raise ValueError(f"compile=True: a decode step of batch {batch_size} × top-{ff.router.top_k} has {rows} "
                             f"(token, expert) pairs per MoE layer; the compiled step takes at most {limit}")


def _forward_step(model, ids_B1: torch.Tensor, view: StaticDecode) -> torch.Tensor:
    return model(ids_B1, cache=view, last_only=True, check_ids=False)[:, -1]


class DecodeStep:
    """Next-token logits [B, V] for one new token per row (ids [B, 1]), continuing `cache`. compile: torch.compile
    the step (fullgraph; `backend` as torch.compile takes it); cuda_graph: replay it as a CUDA graph (None: on CUDA
    devices when compiling). The logits of a graph replay live in the graph's output buffer: valid until the next
    call."""

    def __init__(self, model, cache: KVCache, compile: bool = True, backend: str = "inductor",
                 cuda_graph: bool | None = None):
        device = model.device
        check_compilable(model, cache.layers[0].k.shape[0], backend)
        for m in model.modules():  # the int4 banks find their stacked buffers now, outside the compiled step
            if hasattr(m, "prepare_gather"):
                m.prepare_gather()
        self.model, self.cache = model, cache
        self.pos_1 = torch.zeros(1, dtype=torch.long, device=device)  # the step's position, set before each call
        self.view = StaticDecode(cache, self.pos_1)
        self.fn = torch.compile(_forward_step, fullgraph=True, backend=backend) if compile else _forward_step
        self.cuda_graph = device.type == "cuda" and compile if cuda_graph is None else cuda_graph
        if self.cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA model, this one is on {device}")
        self.graph, self.ids_B1, self.out_BV = None, None, None

    @torch.no_grad()
    def __call__(self, ids_B1: torch.Tensor) -> torch.Tensor:
        if ids_B1.dim() != 2 or ids_B1.shape[1] != 1 or ids_B1.shape[0] != self.cache.layers[0].k.shape[0]:
            raise ValueError(f"a decode step takes one token per row of the cache's batch, ids "
                             f"[{self.cache.layers[0].k.shape[0]}, 1]; got shape {tuple(ids_B1.shape)}")
        self.cache.check(1)
        self.pos_1.fill_(self.cache.pos)  # a host → device write, queued: no wait
        if not self.cuda_graph:
            logits_BV = self.fn(self.model, ids_B1, self.view)
        elif self.graph is None:  # first call: run it once (compiles, loads kernels), then record it
            logits_BV = self._warm_up_and_record(ids_B1)
        else:
            self.ids_B1.copy_(ids_B1)
            self.graph.replay()
            logits_BV = self.out_BV
        self.cache.advance_decode()
        return logits_BV

    def _warm_up_and_record(self, ids_B1: torch.Tensor) -> torch.Tensor:
        """Run this step on a side stream (the warm-up CUDA graphs want), then record the same step in a graph without
        running it: recording launches nothing, so the cache is written once, by the warm-up."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits_BV = self.fn(self.model, ids_B1, self.view)
        torch.cuda.current_stream().wait_stream(side)
        self.ids_B1 = ids_B1.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out_BV = self.fn(self.model, self.ids_B1, self.view)
        return logits_BV
