"""Chapter 02 cases: router, dispatch, sparse routed experts, dense emulation. Expected values come from the
package (`minillama4.router.Router`, `minillama4.moe.dispatch`, `minillama4.moe.routed_experts`,
`minillama4.moe.moe_dense_reference`), never from hand-typed numbers."""

import torch

from ...moe import MoE, dispatch, moe_dense_reference, routed_experts
from ...router import Router
from .core import seeded as _g, Case, Exercise, register



def _tie_free(logits_TE: torch.Tensor, k: int) -> bool:
    """True when the top-(k+1) logits of every row are strictly ordered, so top-k indices are unambiguous."""
    top = torch.topk(logits_TE.float(), min(k + 1, logits_TE.shape[-1]), dim=-1).values
    return bool((top[:, :-1] > top[:, 1:]).all())


# ------------------------------------------------------------------------------------------------ route
def _route_cases():
    cases = []
    for seed, (T, D, E, k, dtype) in enumerate([(6, 16, 4, 1, torch.float32), (9, 32, 8, 2, torch.float32),
                                                (5, 16, 16, 3, torch.float32), (12, 32, 4, 1, torch.bfloat16)]):
        for attempt in range(100):  # reseed until no top-k ties (bfloat16 has few mantissa bits)
            g = _g(1000 * seed + attempt)
            router = Router(D, E, k)
            with torch.no_grad():
                router.weight.copy_(torch.randn(E, D, generator=g) * 0.3)
            router = router.to(dtype)
            x = torch.randn(T, D, generator=g).to(dtype)
            out = router(x)
            if _tie_free(out.logits, k):
                break
        else:
            raise RuntimeError("could not draw a tie-free routing case")
        w = router.weight.detach().clone()
        cases.append(Case((x, w, k), (out.logits.detach(), out.indices, out.scores.detach())))
    return cases


# ------------------------------------------------------------------------------------------------ dispatch
def _dispatch_cases():
    cases = []
    # (T, k, E, experts actually used): the second case never picks the last expert (its count must be 0);
    # the third is long enough that an unstable sort would reorder equal experts
    for seed, (T, k, E, used) in enumerate([(10, 1, 4, 4), (12, 2, 5, 4), (300, 2, 8, 8), (7, 3, 6, 6)]):
        idx = torch.topk(torch.rand(T, used, generator=_g(200 + seed)), k, dim=-1).indices  # distinct per token
        cases.append(Case((idx, E), dispatch(idx, E)))
    return cases


# ------------------------------------------------------------------------------------------------ routed experts
def _moe(seed: int, T: int, D: int, F: int, E: int, k: int, unused_last: bool):
    """A package MoE with large random weights (so a wrong formula cannot hide under the tolerance), its input,
    and its routing. unused_last: the router never picks the last expert (its slice is empty)."""
    g = _g(300 + seed)
    torch.manual_seed(seed)
    moe = MoE(D, F, E, k)
    with torch.no_grad():
        moe.router.weight.copy_(torch.randn(E, D, generator=g) * 0.3)
        moe.experts.gate_up_proj.copy_(torch.randn(E, D, 2 * F, generator=g) * 0.5)
        moe.experts.down_proj.copy_(torch.randn(E, F, D, generator=g) * 0.5)
        moe.shared_expert.down_proj.weight.zero_()  # shared(x) = 0: the dense reference is then the routed part
        if unused_last:
            moe.router.selection_bias[-1] = -1e4
    x = torch.randn(T, D, generator=g)
    with torch.no_grad():
        routing = moe.router(x)
    return moe, x, routing


_MOE_SHAPES = [(8, 16, 12, 4, 1, False), (12, 16, 8, 6, 2, True), (20, 32, 16, 8, 2, False), (6, 8, 8, 5, 3, True)]


def _routed_cases():
    cases = []
    for seed, shape in enumerate(_MOE_SHAPES):
        moe, x, r = _moe(seed, *shape)
        with torch.no_grad():
            y = routed_experts(moe.experts, x, r)
        cases.append(Case((x, r.indices, r.scores, moe.experts.gate_up_proj.detach(),
                           moe.experts.down_proj.detach()), y))
    return cases


def _dense_cases():
    cases = []
    for seed, shape in enumerate(_MOE_SHAPES):
        moe, x, r = _moe(10 + seed, *shape)
        with torch.no_grad():
            y = moe_dense_reference(moe, x)  # shared expert zeroed: only the routed sum remains
        cases.append(Case((x, r.indices, r.scores, moe.experts.gate_up_proj.detach(),
                           moe.experts.down_proj.detach()), y))
    return cases


register(Exercise("route", 2, "route", _route_cases,
                  "logits = x @ W.t(); torch.topk on the raw logits; scores = sigmoid of the chosen logits only "
                  "(no softmax, no renormalisation), computed in float32 and cast back to x's dtype"))
register(Exercise("dispatch", 2, "dispatch", _dispatch_cases,
                  "flatten idx_TK, torch.argsort(flat, stable=True) gives slot_N; token = slot // K; "
                  "torch.bincount(flat, minlength=E) so experts nobody chose count 0", exact=True))
register(Exercise("routed_experts", 2, "routed_experts", _routed_cases,
                  "scale each token by its score BEFORE the expert (SwiGLU is not linear: s·f(x) ≠ f(s·x)); after "
                  "sorting, expert e's rows are one contiguous slice; add results back with out.index_add_(0, token, y)"))
register(Exercise("dense_routed_experts", 2, "dense_routed_experts", _dense_cases,
                  "scatter the K scores into a zero [T, E] table, x_ETD = score_TE.t()[:, :, None] * x_TD[None], "
                  "then torch.bmm with gate_up_proj, silu(gate) * up, torch.bmm with down_proj, sum over experts"))
