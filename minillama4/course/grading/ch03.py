"""Chapter 03 cases: the MoE block, the balancing losses, the layer plans, the aux-loss-free bias update.
Expected values come from the package: `moe.MoE`, `losses`, `Llama4Config.moe_layers`, `balancing.bias_update`.
Below them, the common wrong versions the grader recognises, with what it tells the learner."""

import torch
import torch.nn.functional as F

from ...balancing import bias_update, expert_counts
from ...config import Llama4Config
from ...losses import load_balancing_loss, router_z_loss
from ...moe import MoE
from .ch02 import _each_expert
from .core import seeded as _g, Case, Exercise, Mistake, register


def _top_k_gap(logits_TE: torch.Tensor, k: int) -> float:
    """Smallest gap between neighbouring sorted logits over the first k+1 places: a near-tie could flip the top-k
    between two correct implementations, so cases resample until it is comfortably large."""
    s = logits_TE.sort(dim=-1, descending=True).values[:, :min(k + 1, logits_TE.shape[-1])]
    return float((s[:, :-1] - s[:, 1:]).min()) if s.shape[-1] > 1 else float("inf")


def _moe_cases():
    cases = []
    # the first case has k = 2 (so no score, a renormalised score and a score of 1 all differ) and D, F, 2F all
    # different (so a weight used in the wrong layout is a shape error)
    for i, (T, D, F, E, k) in enumerate([(12, 16, 12, 5, 2), (6, 8, 8, 4, 1), (9, 8, 4, 3, 3), (3, 8, 8, 8, 1)]):
        seed = 100 * i
        while True:  # deterministic: the first seed whose routing has no near-tie
            torch.manual_seed(seed)
            moe = MoE(D, F, E, k)
            with torch.no_grad():  # weights larger than the init, so a wrong formula cannot hide under the tolerance
                moe.router.weight.normal_(0, 0.5, generator=_g(seed))
                moe.experts.gate_up_proj.normal_(0, 0.5, generator=_g(seed + 1))
                moe.experts.down_proj.normal_(0, 0.5, generator=_g(seed + 2))
                for j, lin in enumerate((moe.shared_expert.gate_proj, moe.shared_expert.up_proj,
                                         moe.shared_expert.down_proj)):
                    lin.weight.normal_(0, 0.5, generator=_g(seed + 3 + j))
            x = torch.randn(T, D, generator=_g(seed + 10))
            if _top_k_gap(x @ moe.router.weight.detach().t(), k) > 1e-3:
                break
            seed += 1
        with torch.no_grad():
            out, _ = moe(x)
        s = moe.shared_expert
        weights = (moe.router.weight, moe.experts.gate_up_proj, moe.experts.down_proj, s.gate_proj.weight,
                   s.up_proj.weight, s.down_proj.weight)
        cases.append(Case((x, *[w.detach().clone() for w in weights], k), out))
    return cases


def _logits(seed: int, T: int, E: int, scale: float, k: int) -> torch.Tensor:
    while True:
        logits = torch.randn(T, E, generator=_g(seed)) * scale
        if _top_k_gap(logits, k) > 1e-4:
            return logits
        seed += 1000


def _balance_cases():
    cases = []
    for seed, (T, E, k, scale) in enumerate([(16, 4, 1, 1.0), (40, 8, 2, 2.0), (25, 6, 3, 0.5), (30, 5, 1, 4.0)]):
        logits = _logits(200 + seed, T, E, scale, k)
        if seed == 3:
            logits[:, 2] += 6.0  # a router that sends nearly everything to expert 2
        cases.append(Case((logits, k), float(load_balancing_loss(logits, k))))
    uniform = torch.zeros(12, 6)  # every logit equal: L = 1 whatever the tie-breaking picks
    cases.append(Case((uniform, 2), float(load_balancing_loss(uniform, 2))))
    return cases


def _z_cases():
    cases = []
    # the last case has logits near 100: exp() overflows float32 there, logsumexp does not
    for seed, (T, E, scale, shift) in enumerate([(10, 4, 1.0, 0.0), (7, 16, 3.0, 2.0), (20, 8, 0.3, -5.0),
                                                 (6, 8, 2.0, 100.0)]):
        logits = torch.randn(T, E, generator=_g(300 + seed)) * scale + shift
        cases.append(Case((logits,), float(router_z_loss(logits))))
    return cases


def _layer_cases():
    cases = [Case((48, 1), Llama4Config.preset("scout").moe_layers),
             Case((48, 2), Llama4Config.preset("maverick").moe_layers)]
    toy = Llama4Config.preset("toy")
    for L, step in [(4, 1), (4, 2), (7, 2), (9, 3), (6, 4), (1, 1)]:
        cases.append(Case((L, step), toy.replace(num_hidden_layers=L, interleave_moe_layer_step=step).moe_layers))
    return cases


def _bias_cases():
    cases = []
    for seed, (T, E, k, rate) in enumerate([(20, 4, 1, 0.01), (33, 6, 2, 0.1), (16, 8, 1, 1e-3)]):
        bias = torch.randn(E, generator=_g(400 + seed)) * 0.1
        idx = torch.randint(0, E, (T, k), generator=_g(410 + seed))
        cases.append(_bias_case(bias, idx, rate))
    bias = torch.tensor([0.3, -0.2, 0.0, 0.1])
    idx = torch.tensor([[0], [1], [2], [3], [0], [1], [0], [3]])  # loads 3, 2, 1, 2: mean 2 → experts 1, 3 unchanged
    cases.append(_bias_case(bias, idx, 0.05))
    bias = torch.zeros(6)
    idx = torch.randint(0, 4, (12, 1), generator=_g(420))  # experts 4 and 5 get nothing: they must still go up
    cases.append(_bias_case(bias, idx, 0.01))
    return cases


def bias_probe(fn, bias_E, indices_TK, rate):
    """What aux_free_bias_update is graded on: the new bias, and the caller's bias after the call (unchanged)."""
    return fn(bias_E, indices_TK, rate), bias_E.clone()


def _bias_case(bias_E, indices_TK, rate) -> Case:
    new_E = bias_update(bias_E, expert_counts(indices_TK, bias_E.shape[0]), rate)
    return Case((bias_E, indices_TK, rate), (new_E, bias_E.clone()))


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch03.py holds independently written wrong learner files for each of them.
def _moe_variant(score: str = "sigmoid", on_output: bool = False, shared: bool = True, overwrite: bool = False):
    """A wrong MoE block: another score (softmax over all experts, renormalised, none), the score on the expert's
    output, no shared expert, or each chosen expert's output assigned to its token instead of added."""
    def wrong(x, router_w, gate_up, down, shared_gate, shared_up, shared_down, k):
        logits = x @ router_w.t()
        top, idx = logits.topk(k, dim=-1)
        s = {"sigmoid": lambda: torch.sigmoid(top),
             "softmax": lambda: torch.softmax(logits, dim=-1).gather(-1, idx),
             "softmax_top_k": lambda: torch.softmax(top, dim=-1),
             "sigmoid_renormalised": lambda: torch.sigmoid(top) / torch.sigmoid(top).sum(-1, keepdim=True),
             "none": lambda: torch.ones_like(top)}[score]()
        if overwrite:
            out = torch.zeros_like(x)
            for e in range(router_w.shape[0]):  # later experts overwrite earlier ones
                t, j = (idx == e).nonzero(as_tuple=True)
                out[t] = _each_expert(x[t], idx[t, j][:, None], s[t, j][:, None], gate_up, down)
        else:
            out = _each_expert(x, idx, s, gate_up, down, on_output=on_output)
        if shared:
            out = out + (F.silu(x @ shared_gate.t()) * (x @ shared_up.t())) @ shared_down.t()
        return out
    return wrong


def _lb_top1_only(logits, k):
    T, E = logits.shape
    f = torch.bincount(logits.topk(k, dim=-1).indices[:, 0], minlength=E).float() / T
    return float(E * (f * logits.softmax(-1).mean(0)).sum())


def _lb_variant(divide_by_T=False, P="softmax", soft_f=False, times_E=True):
    def wrong(logits, k):
        T, E = logits.shape
        f = torch.bincount(logits.topk(k, dim=-1).indices.reshape(-1), minlength=E).float() / (T if divide_by_T
                                                                                              else T * k)
        P_E = {"softmax": logits.softmax(-1), "sigmoid": torch.sigmoid(logits),
               "softmax_over_tokens": logits.softmax(0)}[P].mean(0)
        if soft_f:
            f = logits.softmax(-1).mean(0)
        return float((E if times_E else 1) * (f * P_E).sum())
    return wrong


def _z_square_of_mean(logits):
    return float(torch.logsumexp(logits, dim=-1).mean() ** 2)


def _z_max(logits):
    return float((logits.max(dim=-1).values ** 2).mean())


def _z_sum(logits):
    return float((torch.logsumexp(logits, dim=-1) ** 2).sum())


def _z_over_tokens(logits):
    return float((torch.logsumexp(logits, dim=0) ** 2).mean())


def _z_squared_logits(case, got) -> bool:
    """The logits themselves squared: mean over every entry, or summed per token then averaged."""
    (logits,) = case.args
    got = float(got)
    sq = logits.float() ** 2
    return any(abs(got - float(v)) <= 1e-4 * abs(float(v)) + 1e-5 for v in (sq.mean(), sq.sum(-1).mean()))


def _not_finite(case, got) -> bool:
    return not torch.isfinite(torch.as_tensor(got, dtype=torch.float64)).all()


def _layers_from_0(num_layers, step):
    return list(range(0, num_layers, step))


def _layers_1_based(num_layers, step):
    return list(range(step, num_layers + 1, step))


def _layers_from_1(num_layers, step):
    return list(range(1, num_layers, step))


def _bias_variant(flip=False, proportional=False):
    def wrong(bias_E, indices_TK, rate):
        load = torch.bincount(indices_TK.reshape(-1), minlength=bias_E.shape[0]).float()
        gap = load.mean() - load
        step = gap if proportional else torch.sign(gap)
        return bias_E + rate * (-step if flip else step)
    return wrong


def _changed_in_place(case, got) -> bool:
    """The caller's bias came back changed, to the returned value: the update was done in place."""
    new, after = got
    return torch.equal(after, new) and not torch.equal(after, case.expected[1])  # expected[1]: the bias as given


def _moved_at_mean(case, got) -> bool:
    """Right everywhere except at experts whose load is exactly the mean, which moved by ±rate."""
    bias, idx, rate = case.args
    load = torch.bincount(idx.reshape(-1), minlength=bias.shape[0]).float()
    wrong_E = ~torch.isclose(got[0], case.expected[0], atol=1e-6)
    return bool(wrong_E.any() and (load[wrong_E] == load.mean()).all())


_RENORMALISED = ("your scores are renormalised over the k chosen experts (they sum to 1, as in Mixtral or "
                 "DeepSeek-V3): Llama 4 uses σ(logit) of each chosen expert as it is")

register(Exercise(
    "moe_forward", 3, "moe_forward", _moe_cases,
    "score = sigmoid(top-k of x @ router_w.t()) multiplies the expert's INPUT (expert(σ·x), not σ·expert(x)); the "
    "shared expert sees the plain x; add every chosen expert's output back to its token (index_add_), then add the "
    "shared expert's output",
    nudge="Write the formula out(x) = shared(x) + Σ expert_e(σ_e · x) next to your code: where does each σ_e come "
          "from, where is it multiplied in, and which experts does every token go through?",
    mistakes=[
        Mistake("routed experts are in the checkpoint layout, used as x @ W (gate_up_proj[e] is [D, 2F]); the shared "
                "expert's nn.Linear weights are [out, in], used as x @ W.t() (a shape error in a matmul)",
                raises=r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"),
        Mistake("your scores are softmax probabilities over all experts (Switch Transformer): Llama 4 scores each "
                "chosen expert with the sigmoid of its own logit", wrong=_moe_variant("softmax")),
        Mistake(_RENORMALISED, wrong=_moe_variant("softmax_top_k")),
        Mistake(_RENORMALISED, wrong=_moe_variant("sigmoid_renormalised")),
        Mistake("the routed experts' input is not scaled by the router score: each chosen expert gets σ(logit) · x",
                wrong=_moe_variant("none")),
        Mistake("you multiplied the score into the expert's OUTPUT (σ · expert(x)): Llama 4 scales the INPUT, "
                "expert(σ · x); SwiGLU is not linear, so the two differ", wrong=_moe_variant(on_output=True)),
        Mistake("the shared expert is missing: every token also goes through it, on the plain x, and its output is "
                "added to the routed sum", wrong=_moe_variant(shared=False)),
        Mistake("you assigned each expert's output to its tokens (out[tokens] = y) instead of adding it: a token with "
                "k experts gets the sum of all k (index_add_)", wrong=_moe_variant(overwrite=True)),
    ]))
register(Exercise(
    "load_balancing_loss", 3, "load_balancing_loss", _balance_cases,
    "f counts all k choices of every token and divides by T·k (so Σ f = 1); P is the mean over tokens of the SOFTMAX "
    "over all E logits; the result is E · Σ_i f_i P_i",
    nudge="Check your f and P before the product: each should sum to 1 over the experts, and a perfectly uniform "
          "router should give exactly L = 1.",
    mistakes=[
        Mistake("f counts only each token's first choice: every one of its k choices counts (top-k indices, "
                "flattened)", wrong=_lb_top1_only),
        Mistake("you divided the counts by T: with k choices per token divide by T·k, so that Σ f = 1 (yours sums "
                "to k)", wrong=_lb_variant(divide_by_T=True)),
        Mistake("P is the mean SOFTMAX probability over all E logits, not the sigmoid", wrong=_lb_variant(P="sigmoid")),
        Mistake("the softmax runs over the experts (last dim) of each token, not over the tokens (dim 0)",
                wrong=_lb_variant(P="softmax_over_tokens")),
        Mistake("f is a hard count of the top-k choices, not the mean router probability (that gives E · Σ P²)",
                wrong=_lb_variant(soft_f=True)),
        Mistake("the loss is E · Σ f_i P_i: you left out the factor E (or took the mean over experts instead of the "
                "sum)", wrong=_lb_variant(times_E=False)),
    ]))
register(Exercise(
    "router_z_loss", 3, "router_z_loss", _z_cases,
    "square each token's logsumexp first, then average over tokens: torch.logsumexp(logits, dim=-1).square().mean() "
    "(logsumexp, not log(exp(...).sum()), which overflows for large logits)",
    nudge="z_t = log Σ_i exp(logit_ti) is one number per token. In which order do the square and the mean come, and "
          "what happens to exp(100) in float32?",
    mistakes=[
        Mistake("you averaged the logsumexp over tokens, then squared: square each token's logsumexp first, then "
                "average", wrong=_z_square_of_mean),
        Mistake("log Σ exp is not the max logit (only a lower bound of it): use torch.logsumexp(logits, dim=-1)",
                wrong=_z_max),
        Mistake("the z-loss squares each token's log-sum-exp, not the logits themselves", test=_z_squared_logits),
        Mistake("average the squares over the tokens (mean), do not sum them", wrong=_z_sum),
        Mistake("logsumexp runs over the experts (last dim) of each token, not over the tokens (dim 0)",
                wrong=_z_over_tokens),
        Mistake("exp of large logits overflows float32 to inf: torch.logsumexp computes log Σ exp without overflow "
                "(it subtracts the max first)", test=_not_finite),
    ]))
register(Exercise(
    "moe_layer_indices", 3, "moe_layer_indices", _layer_cases,
    "layer i is MoE when (i + 1) % step == 0: with step 2 that is 1, 3, 5, … (Maverick), not 0, 2, 4; return a "
    "plain Python list of ints", exact=True,
    nudge="Group the layers in blocks of interleave_step: which layer of each block is the MoE one, the first or the "
          "last? Try it by hand for Maverick (step 2) and for step 3.",
    mistakes=[
        Mistake("return a plain Python list of ints, not a range, tuple, array or tensor (wrap it in list(...), or "
                "call .tolist())",
                test=lambda case, got: not (type(got) is list and all(type(i) is int for i in got))),
        Mistake("the MoE layer is the LAST of each group of step layers, (i + 1) % step == 0: Maverick's are 1, 3, "
                "5, …, not 0, 2, 4, …", wrong=_layers_from_0),
        Mistake("layer indices are 0-based: the last layer is num_layers − 1, and the MoE ones are step − 1, "
                "2·step − 1, …", wrong=_layers_1_based),
        Mistake("the first MoE layer is step − 1, not always 1: the MoE layer is the LAST of each group of step "
                "layers (Scout, step 1: every layer from 0)", wrong=_layers_from_1),
    ]))
register(Exercise(
    "aux_free_bias_update", 3, "aux_free_bias_update", _bias_cases,
    "load = torch.bincount(indices.flatten(), minlength=E) (minlength: experts that got no token count as 0); new "
    "bias = bias + rate · sign(load.mean() - load) as a new tensor: under-used experts (load below the mean) go UP, "
    "an expert at exactly the mean stays", probe=bias_probe,
    nudge="An expert that got fewer tokens than average should become easier to pick next time: which way does its "
          "bias move, by how much, and what about an expert that got no token at all?",
    mistakes=[
        Mistake("torch.bincount stops at the largest expert that was chosen: add minlength=E (bias_E.shape[0]) so "
                "experts that got no token count 0", raises=r"must match the size of tensor"),
        Mistake("you changed bias_E in place: return a new tensor (bias_E + …) and leave the caller's bias as it was",
                test=_changed_in_place),
        Mistake("the sign is flipped: under-used experts (load below the mean) must go UP, "
                "b + rate · sign(mean − load)", wrong=_bias_variant(flip=True)),
        Mistake("the step is ±rate, the SIGN of (mean − load), not proportional to the gap: use torch.sign",
                wrong=_bias_variant(proportional=True)),
        Mistake("an expert whose load is exactly the mean keeps its bias: sign(0) = 0 (torch.sign), not ±rate",
                test=_moved_at_mean),
    ]))
