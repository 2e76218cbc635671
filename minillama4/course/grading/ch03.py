"""Chapter 03 cases: the MoE block, the balancing losses, the layer plans, the aux-loss-free bias update.
Expected values come from the package: `moe.MoE`, `losses`, `Llama4Config.moe_layers`, `balancing.bias_update`."""

import torch

from ...balancing import bias_update, expert_counts
from ...config import Llama4Config
from ...losses import load_balancing_loss, router_z_loss
from ...moe import MoE
from .core import seeded as _g, Case, Exercise, register



def _top_k_gap(logits_TE: torch.Tensor, k: int) -> float:
    """Smallest gap between neighbouring sorted logits over the first k+1 places: a near-tie could flip the top-k
    between two correct implementations, so cases resample until it is comfortably large."""
    s = logits_TE.sort(dim=-1, descending=True).values[:, :min(k + 1, logits_TE.shape[-1])]
    return float((s[:, :-1] - s[:, 1:]).min()) if s.shape[-1] > 1 else float("inf")


def _moe_cases():
    cases = []
    for i, (T, D, F, E, k) in enumerate([(6, 8, 8, 4, 1), (12, 16, 12, 5, 2), (9, 8, 4, 3, 3), (3, 8, 8, 8, 1)]):
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
    for seed, (T, E, scale, shift) in enumerate([(10, 4, 1.0, 0.0), (7, 16, 3.0, 2.0), (20, 8, 0.3, -5.0)]):
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
        cases.append(Case((bias, idx, rate), bias_update(bias, expert_counts(idx, E), rate)))
    bias = torch.tensor([0.3, -0.2, 0.0, 0.1])
    idx = torch.tensor([[0], [1], [2], [3], [0], [1], [0], [3]])  # loads 3, 2, 1, 2: mean 2 → experts 1, 3 unchanged
    cases.append(Case((bias, idx, 0.05), bias_update(bias, expert_counts(idx, 4), 0.05)))
    bias = torch.zeros(6)
    idx = torch.randint(0, 4, (12, 1), generator=_g(420))  # experts 4 and 5 get nothing: they must still go up
    cases.append(Case((bias, idx, 0.01), bias_update(bias, expert_counts(idx, 6), 0.01)))
    return cases


register(Exercise("moe_forward", 3, "moe_forward", _moe_cases,
                  "score = sigmoid(top-k of x @ router_w.t()) multiplies the expert's INPUT (expert(σ·x), not "
                  "σ·expert(x)); the shared expert sees the plain x; add every chosen expert's output back to its "
                  "token (index_add_) and then the shared expert's output"))
register(Exercise("load_balancing_loss", 3, "load_balancing_loss", _balance_cases,
                  "f counts all k choices of every token and divides by T·k (so Σ f = 1); P is the mean over tokens "
                  "of the SOFTMAX over all E logits; the result is E · Σ_i f_i P_i"))
register(Exercise("router_z_loss", 3, "router_z_loss", _z_cases,
                  "square each token's logsumexp first, then average over tokens (torch.logsumexp(logits, -1))"))
register(Exercise("moe_layer_indices", 3, "moe_layer_indices", _layer_cases,
                  "layer i is MoE when (i + 1) % step == 0: with step 2 that is 1, 3, 5, … (Maverick), not 0, 2, 4; "
                  "return a plain Python list of ints",
                  exact=True))
register(Exercise("aux_free_bias_update", 3, "aux_free_bias_update", _bias_cases,
                  "load = torch.bincount(indices.flatten(), minlength=E) (minlength: experts that got no token count as 0); new bias = bias + rate · sign(load.mean() "
                  "- load): under-used experts (load below the mean) go UP"))
