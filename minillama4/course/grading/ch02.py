"""Chapter 02 cases: router, dispatch, sparse routed experts, dense emulation. Expected values come from the
package (`minillama4.router.Router`, `minillama4.moe.dispatch`, `minillama4.moe.routed_experts`,
`minillama4.moe.moe_dense_reference`), never from hand-typed numbers. Below them, the common wrong versions the grader
recognises, with what it tells the learner."""

import torch
import torch.nn.functional as F

from ...moe import MoE, dispatch, moe_dense_reference, routed_experts
from ...router import Router
from .core import seeded as _g, Case, Exercise, Mistake, register


def _tie_free(logits_TE: torch.Tensor, k: int) -> bool:
    """True when the top-(k+1) logits of every row are strictly ordered, so top-k indices are unambiguous."""
    top = torch.topk(logits_TE.float(), min(k + 1, logits_TE.shape[-1]), dim=-1).values
    return bool((top[:, :-1] > top[:, 1:]).all())


def _sigmoid_ranking_differs(logits_TE: torch.Tensor, k: int) -> bool:
    """True when ranking σ(logits), rounded to the logits' dtype, chooses other experts than ranking the logits in
    some row: bfloat16 rounds the sigmoids of large logits to the same value, ties the logits did not have."""
    by_logit = logits_TE.topk(k, dim=-1).indices.sort(-1).values
    by_sigmoid = torch.sigmoid(logits_TE).topk(k, dim=-1).indices.sort(-1).values
    return not torch.equal(by_logit, by_sigmoid)


# ------------------------------------------------------------------------------------------------ route
def _route_cases():
    cases = []
    # (T, D, E, k, dtype, weight scale, sigmoid ties): the last case has large bfloat16 logits (Scout's 16 experts,
    # top-1) where ranking σ(logits) instead of the logits really picks another expert for some token
    for seed, (T, D, E, k, dtype, scale, ties) in enumerate([
        (6, 16, 4, 1, torch.float32, 0.3, False), (9, 32, 8, 2, torch.float32, 0.3, False),
        (5, 16, 16, 3, torch.float32, 0.3, False), (12, 32, 4, 1, torch.bfloat16, 0.3, False),
        (16, 32, 16, 1, torch.bfloat16, 1.0, True),
    ]):
        for attempt in range(100):  # reseed until no top-k ties (bfloat16 has few mantissa bits)
            g = _g(1000 * seed + attempt)
            router = Router(D, E, k)
            with torch.no_grad():
                router.weight.copy_(torch.randn(E, D, generator=g) * scale)
            router = router.to(dtype)
            x = torch.randn(T, D, generator=g).to(dtype)
            out = router(x)
            if _tie_free(out.logits, k) and (not ties or _sigmoid_ranking_differs(out.logits, k)):
                break
        else:
            raise RuntimeError("could not draw a routing case")
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


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch02.py holds independently written wrong learner files for each of them.
def _route_softmax(x, w, k):
    logits = x @ w.t()
    top, idx = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return logits, idx, top.to(x.dtype)


def _renormalised(case, got) -> bool:
    """The k scores of every token sum to 1 (the right ones do not)."""
    ones = torch.ones(got[2].shape[0])
    return bool(torch.allclose(got[2].float().sum(-1), ones, atol=1e-2)
                and not torch.allclose(case.expected[2].float().sum(-1), ones, atol=1e-2))


def _ranked_rounded_sigmoids(case, got) -> bool:
    """Other experts than the right ones, but with the same σ(logit) once rounded to x's dtype: the ranking was
    done on rounded sigmoids, whose ties the raw logits do not have."""
    logits, right = case.expected[0], case.expected[1]
    idx = got[1].long()
    if case.args[0].dtype == torch.float32 or idx.shape != right.shape or torch.equal(idx, right):
        return False
    sig = torch.sigmoid(logits)
    return torch.equal(sig.gather(-1, idx), sig.gather(-1, right))


def _each_expert(x_TD, idx_TK, s_TK, gate_up, down, on_output=False):
    """Σ_j expert_{idx[t,j]}(s[t,j] · x_t), one (token, slot) at a time; on_output: s · expert(x) instead."""
    out = torch.zeros_like(x_TD)
    for t in range(x_TD.shape[0]):
        for j in range(idx_TK.shape[1]):
            e, s = int(idx_TK[t, j]), s_TK[t, j]
            gate, up = ((x_TD[t] if on_output else s * x_TD[t]) @ gate_up[e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ down[e]
            out[t] += s * y if on_output else y
    return out


def _score_on_output(x, idx, s, gate_up, down):
    return _each_expert(x, idx, s, gate_up, down, on_output=True)


def _no_score(x, idx, s, gate_up, down):
    return _each_expert(x, idx, torch.ones_like(s), gate_up, down)


def _sigmoid_twice(x, idx, s, gate_up, down):
    return _each_expert(x, idx, torch.sigmoid(s), gate_up, down)


def _first_expert_only(x, idx, s, gate_up, down):
    return _each_expert(x, idx[:, :1], s[:, :1], gate_up, down)


def _score_by_token(x, idx, s, gate_up, down):
    """Assignment (t, j) scaled by scores.flatten()[t]: the sorted rows' scores looked up with token_N, not slot_N."""
    T, K = idx.shape
    return _each_expert(x, idx, s.reshape(-1)[:T, None].expand(T, K), gate_up, down)


def _score_unsorted(x, idx, s, gate_up, down):
    """The n-th row in expert order scaled by scores.flatten()[n]: the scores were never put in expert order."""
    _, slot, _ = dispatch(idx, gate_up.shape[0])
    s_N = s.reshape(-1).clone()
    s_N[slot] = s.reshape(-1).clone()  # assignment slot[n] gets the n-th score in token order
    return _each_expert(x, idx, s_N.reshape(idx.shape), gate_up, down)


def _overwritten(case, got) -> bool:
    """With k > 1, every token's row is ONE of its k expert outputs, not their sum: out[token] = y, not +=."""
    x, idx, s, gate_up, down = case.args
    if idx.shape[1] < 2:
        return False
    each_TKD = torch.stack([_each_expert(x, idx[:, j:j + 1], s[:, j:j + 1], gate_up, down)
                            for j in range(idx.shape[1])], dim=1)
    close_TK = torch.isclose(got[:, None, :], each_TKD, atol=1e-4, rtol=1e-3).all(-1)
    return bool(close_TK.any(-1).all() and not close_TK[:, 0].all())  # (always the first: another mistake)


def _unstable(case, got) -> bool:
    """slot_N is a permutation that orders the assignments by expert, but not by position within one expert."""
    flat = case.args[0].reshape(-1)
    slot = got[1].long()
    if slot.shape != flat.shape or torch.equal(slot, case.expected[1]) or \
            not torch.equal(slot.sort().values, torch.arange(flat.numel())):
        return False
    experts = flat[slot]
    return bool((experts[1:] >= experts[:-1]).all())


def _no_expert_sum(case, got) -> bool:
    """The [E, T, D] stack of expert outputs (not summed), or a sum over the tokens instead of the experts."""
    x, _, _, gate_up, _ = case.args
    E, (T, D) = gate_up.shape[0], x.shape
    return got.shape != case.expected.shape and tuple(got.shape) in ((E, T, D), (E, D))


_SCORE_ON_OUTPUT = ("you multiplied the score into the expert's OUTPUT (s · expert(x), as Mixtral does): Llama 4 "
                    "scales the INPUT, expert(s · x); SwiGLU is not linear, so the two differ")
_NO_SCORE = "the expert's input must be scaled by the router score: expert(s · x), not expert(x)"
_SIGMOID_TWICE = ("scores_TK already holds σ(logits): use it as given, applying sigmoid again squashes every score "
                  "towards 0.5")
_CHECKPOINT_LAYOUT = ("the experts use the checkpoint layout as h @ W, no transpose: gate_up_proj[e] is [D, 2F] and "
                      "down_proj[e] is [F, D] (a shape error in a matmul)")

# bmm's error "Expected size for first two dimensions of batch2 tensor to be: [B, n] but got: [B', n']": a batch
# that differs (B' ≠ B, same n) is an input stacked in the wrong order; the same batch with another n is a weight used
# in the wrong layout (as is a plain matmul's shape error)
_BATCH_MISMATCH = r"batch2 tensor to be: \[(\d+), (\d+)\] but got: \[(?!\1,)\d+, \2\]"
_INNER_MISMATCH = r"batch2 tensor to be: \[(\d+), \d+\] but got: \[\1, |mat1 and mat2 shapes|size mismatch"

register(Exercise(
    "route", 2, "route", _route_cases,
    "logits = x @ W.t(); torch.topk on the raw logits (not on their sigmoid); scores = sigmoid of the chosen "
    "logits only (no softmax, no renormalisation), computed in float32 and cast back to x's dtype",
    nudge="Three steps: a linear layer, a choice, a gate. What does the choice rank, and does the gate of one expert "
          "depend on the other experts' logits?",
    mistakes=[
        Mistake("the router weight is [E, D] (nn.Linear layout): logits = x @ W.t() (a shape error in a matmul)",
                raises=r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"),
        Mistake("your scores' dtype is not x's: compute σ in float32, then cast the scores back to x's dtype "
                "(.to(x.dtype))",
                test=lambda case, got: got[2].is_floating_point() and got[2].dtype != case.args[0].dtype),
        Mistake("you returned σ of every expert's logit: the scores are for the k chosen experts only, [T, k]",
                test=lambda case, got: tuple(got[2].shape) == tuple(case.expected[0].shape)),
        Mistake("your k scores sum to 1 for every token: that is a renormalisation (a softmax over the chosen "
                "logits, as in Mixtral); Llama 4 gives each chosen expert its own σ(logit), nothing is normalised",
                test=_renormalised),
        Mistake("your scores are softmax probabilities over all experts (Switch Transformer): Llama 4 scores each "
                "chosen expert with the sigmoid of its own logit", wrong=_route_softmax),
        Mistake("you ranked σ(logits) in bfloat16: the sigmoids of large logits round to the same value, so the "
                "ranking has ties the logits do not have and can pick the wrong expert; take the top-k of the raw "
                "logits, then σ of the chosen ones", test=_ranked_rounded_sigmoids),
    ]))
register(Exercise(
    "dispatch", 2, "dispatch", _dispatch_cases,
    "flatten idx_TK, torch.argsort(flat, stable=True) gives slot_N; token = slot // K; "
    "torch.bincount(flat, minlength=E) so experts nobody chose count 0", exact=True,
    nudge="Sort the flat list of experts, but keep the positions the sort returns: which sort keeps equal experts in "
          "their original order, and how do you get a count for an expert that never appears?",
    mistakes=[
        Mistake("your counts leave out experts nobody chose: torch.bincount(flat, minlength=E) gives every one of "
                "the E experts its count, 0 included",
                test=lambda case, got: got[2].dim() == 1 and got[2].numel() < case.args[1]),
        Mistake("you returned slot_N before token_N: the order is (token_N, slot_N, counts_E)",
                test=lambda case, got: not torch.equal(*case.expected[:2]) and torch.equal(got[0], case.expected[1])
                and torch.equal(got[1], case.expected[0])),
        Mistake("slot_N and counts_E are right but token_N is not: the flat slot t·K + j belongs to token "
                "t = slot // K",
                test=lambda case, got: torch.equal(got[1], case.expected[1]) and torch.equal(got[2], case.expected[2])),
        Mistake("your slots are grouped by expert but not in token order within an expert: the sort was not stable; "
                "use torch.argsort(flat, stable=True)", test=_unstable),
    ]))
register(Exercise(
    "routed_experts", 2, "routed_experts", _routed_cases,
    "scale each token by its score BEFORE the expert (SwiGLU is not linear: s·f(x) ≠ f(s·x)); the n-th sorted row "
    "gets scores.flatten()[slot_N[n]]; after sorting, expert e's rows are one contiguous slice; add results back with "
    "out.index_add_(0, token, y) so a token's k results are summed",
    nudge="Follow one (token, slot) assignment: which score does it carry, where does the score go (before or after "
          "the expert?), and where does its result land when the token has k of them?",
    mistakes=[
        Mistake(_CHECKPOINT_LAYOUT, raises=r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"),
        Mistake(_SCORE_ON_OUTPUT, wrong=_score_on_output),
        Mistake(_NO_SCORE, wrong=_no_score),
        Mistake(_SIGMOID_TWICE, wrong=_sigmoid_twice),
        Mistake("only each token's first expert contributes: all k chosen experts of a token add their outputs",
                wrong=_first_expert_only),
        Mistake("each sorted row took the score of scores.flatten()[token]: a row's score is "
                "scores.flatten()[slot_N[n]] (with k > 1 a token has k different scores)", wrong=_score_by_token),
        Mistake("the scores were not put in expert order: the n-th sorted row's score is scores.flatten()[slot_N[n]]",
                wrong=_score_unsorted),
        Mistake("you assigned each expert's output to its token (out[token] = y) instead of adding it: a token with "
                "k experts gets the sum of all k, out.index_add_(0, token, y)", test=_overwritten),
    ]))
register(Exercise(
    "dense_routed_experts", 2, "dense_routed_experts", _dense_cases,
    "scatter the K scores into a zero [T, E] table, x_ETD = score_TE.t()[:, :, None] * x_TD[None], "
    "then torch.bmm with gate_up_proj, silu(gate) * up, torch.bmm with down_proj, sum over experts (dim 0)",
    nudge="Every expert sees every token; what input makes an expert's output vanish for a token that was not routed "
          "to it, and which dimension of the stacked inputs must line up with gate_up_proj's first one?",
    mistakes=[
        Mistake("stack the scaled inputs expert-first, [E, T, D] (score_TE.t()[:, :, None] * x[None]), so that "
                "torch.bmm pairs expert e's rows with expert e's weights (a batch-size error in bmm)",
                raises=_BATCH_MISMATCH),
        Mistake(_CHECKPOINT_LAYOUT, raises=_INNER_MISMATCH),
        Mistake("sum the [E, T, D] expert outputs over the experts (dim 0) to get [T, D]", test=_no_expert_sum),
        Mistake(_SCORE_ON_OUTPUT, wrong=_score_on_output),
        Mistake(_NO_SCORE + " (scatter the scores into the [T, E] table, not ones)", wrong=_no_score),
        Mistake(_SIGMOID_TWICE, wrong=_sigmoid_twice),
    ]))
