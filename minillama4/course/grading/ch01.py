"""Chapter 01 cases: RMSNorm, SwiGLU, expert bank. Expected values come from the package's own modules."""

import torch

from ...ffn import ExpertBank, SwiGLU
from ...norm import RMSNorm
from .core import seeded as _g, Case, Exercise, register



def _rms_cases():
    cases = []
    for seed, (T, D, eps) in enumerate([(5, 16, 1e-5), (3, 8, 1e-2), (7, 32, 1e-6)]):
        norm = RMSNorm(D, eps)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(D, generator=_g(100 + seed)))
        x = torch.randn(T, D, generator=_g(seed)) * (seed + 1)
        cases.append(Case((x, norm.weight.detach().clone(), eps), norm(x).detach()))
    return cases


def _swiglu_cases():
    cases = []
    for seed, (T, D, F) in enumerate([(4, 8, 12), (9, 16, 24)]):
        torch.manual_seed(seed)
        ffn = SwiGLU(D, F)
        x = torch.randn(T, D, generator=_g(seed))
        w = [p.detach().clone() for p in (ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight)]
        cases.append(Case((x, *w), ffn(x).detach()))
    return cases


def _bank(seed: int, E: int, D: int, F: int) -> ExpertBank:
    torch.manual_seed(seed)
    bank = ExpertBank(E, D, F)
    with torch.no_grad():  # larger weights than the init, so a wrong formula cannot hide under the tolerance
        bank.gate_up_proj.normal_(0, 0.5, generator=_g(seed))
        bank.down_proj.normal_(0, 0.5, generator=_g(seed + 1))
    return bank


def _expert_cases():
    cases = []
    for seed, (E, D, F, e) in enumerate([(4, 8, 6, 2), (3, 16, 10, 0), (5, 8, 4, 4)]):
        bank = _bank(seed, E, D, F)
        x = torch.randn(6, D, generator=_g(50 + seed))
        cases.append(Case((x, bank.gate_up_proj.detach(), bank.down_proj.detach(), e),
                          bank.forward_expert(e, x).detach()))
    return cases


def _all_experts_cases():
    cases = []
    for seed, (E, D, F) in enumerate([(4, 8, 6), (2, 16, 12)]):
        bank = _bank(10 + seed, E, D, F)
        x = torch.randn(E, 5, D, generator=_g(60 + seed))
        cases.append(Case((x, bank.gate_up_proj.detach(), bank.down_proj.detach()), bank(x).detach()))
    return cases


register(Exercise("rms_norm", 1, "rms_norm", _rms_cases,
                  "divide by sqrt(mean(x**2, last dim) + eps) — the mean, not the sum — then multiply by the weight"))
register(Exercise("swiglu", 1, "swiglu", _swiglu_cases,
                  "nn.Linear weights are [out, in]: use x @ W.t(); silu goes on the gate only, then ⊙ up"))
register(Exercise("expert_forward", 1, "expert_forward", _expert_cases,
                  "x @ gate_up_proj[e] gives [T, 2F]: the first F columns are the gate, the last F the up projection"))
register(Exercise("all_experts_forward", 1, "all_experts_forward", _all_experts_cases,
                  "torch.bmm([E,T,D], [E,D,2F]) → [E,T,2F]; split it in two halves along the last dim"))
