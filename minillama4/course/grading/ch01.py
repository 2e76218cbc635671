"""Chapter 01 cases: RMSNorm, SwiGLU, expert bank. Expected values come from the package's own modules."""

import torch
import torch.nn.functional as F

from ...ffn import ExpertBank, SwiGLU
from ...norm import RMSNorm
from .core import Case, Exercise, Mistake, register
from .core import seeded as _g



def _rms_cases():
    cases = []
    for seed, (T, D, eps) in enumerate([(5, 16, 1e-5), (3, 8, 1e-2), (7, 32, 1e-6)]):
        norm = RMSNorm(D, eps)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(D, generator=_g(100 + seed)))
        x = torch.randn(T, D, generator=_g(seed)) * (seed + 1)
        cases.append(Case((x, norm.weight.detach().clone(), eps), norm(x).detach()))
    norm = RMSNorm(64, 1e-5).to(torch.bfloat16)  # bf16 activations and weight: where the order of cast and × w shows
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=_g(103)))
    x = (torch.randn(9, 64, generator=_g(3)) * 3).to(torch.bfloat16)
    cases.append(Case((x, norm.weight.detach().clone(), 1e-5), norm(x).detach()))
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


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch01.py holds independently written wrong learner files for each of them.
def _rms_sum(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).type_as(x) * w


def _rms_eps_outside(x, w, eps=1e-5):
    xf = x.float()
    return (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).type_as(x) * w


def _rms_no_eps(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True))).type_as(x) * w


def _rms_weight_before_cast(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w).type_as(x)


def _rms_no_weight(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def _rms_centred(x, w, eps=1e-5):
    xf = x.float()
    xc = xf - xf.mean(-1, keepdim=True)
    return (xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def _rms_over_tokens(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(0, keepdim=True) + eps)).type_as(x) * w


def _swiglu_act(act, on_up=False):
    def wrong(x, wg, wu, wd):
        g, u = x @ wg.t(), x @ wu.t()
        return ((g * act(u)) if on_up else (act(g) * u)) @ wd.t()
    return wrong


def _halves_swapped(x, gate_up, down, e=None):
    bank = gate_up if e is None else gate_up[e]
    d = down if e is None else down[e]
    up, gate = (x @ bank).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ d


def _halves_interleaved(x, gate_up, down, e=None):
    bank = gate_up if e is None else gate_up[e]
    d = down if e is None else down[e]
    h = x @ bank
    return (F.silu(h[..., 0::2]) * h[..., 1::2]) @ d


def _first_expert_for_all(x_ETD, gate_up, down):
    gate, up = (x_ETD @ gate_up[0]).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ down[0]


_LINEAR_LAYOUT = ("nn.Linear weights are stored [out, in]: multiply by the transpose, x @ W.t() "
                  "(a shape error in a matmul)")
_CHECKPOINT_LAYOUT = ("the checkpoint layout is used as x @ W, no transpose: gate_up_proj[e] is [D, 2F] and "
                      "down_proj[e] is [F, D] (a shape error in a matmul)")

register(Exercise(
    "rms_norm", 1, "rms_norm", _rms_cases,
    "divide by sqrt(mean(x**2, last dim) + eps) — the mean, not the sum — then multiply by the weight",
    nudge="RMS is the root of the MEAN square of each token's features; which dimension holds the features?",
    mistakes=[
        Mistake("you divided by the root of the SUM of squares: RMSNorm uses the MEAN of x² over the last dim",
                wrong=_rms_sum),
        Mistake("ε belongs inside the square root: x / √(mean(x²) + ε), not x / (√mean(x²) + ε)",
                wrong=_rms_eps_outside),
        Mistake("ε is missing: x / √(mean(x²) + ε) keeps an all-zero (or tiny) token from dividing by zero",
                wrong=_rms_no_eps),
        Mistake("you forgot to multiply by the weight (the learned per-feature scale)", wrong=_rms_no_weight),
        Mistake("you multiplied by the weight before casting back: Llama 4 casts the normalised x to x's dtype "
                "first, then multiplies by the weight (in bf16 the two orders round differently)",
                wrong=_rms_weight_before_cast),
        Mistake("you subtracted the mean first: that is LayerNorm; RMSNorm does not centre x", wrong=_rms_centred),
        Mistake("you normalised over the tokens (dim 0): normalise each token over its features (the last dim)",
                wrong=_rms_over_tokens),
    ]))
register(Exercise(
    "swiglu", 1, "swiglu", _swiglu_cases,
    "nn.Linear weights are [out, in]: use x @ W.t(); silu goes on the gate only, then ⊙ up",
    nudge="Two projections of x go up to F: one passes through silu (which one?), then they are multiplied "
          "element-wise and projected back down.",
    mistakes=[
        Mistake("silu went on the up projection: it belongs on the GATE, silu(x W_gateᵀ) ⊙ (x W_upᵀ)",
                wrong=_swiglu_act(F.silu, on_up=True)),
        Mistake("that is a ReLU gate (ReGLU): SwiGLU uses silu(z) = z·σ(z)", wrong=_swiglu_act(torch.relu)),
        Mistake("that is a GELU gate (GeGLU): SwiGLU uses silu(z) = z·σ(z)", wrong=_swiglu_act(F.gelu)),
        Mistake("you used sigmoid(z) as the gate: silu(z) is z·sigmoid(z)", wrong=_swiglu_act(torch.sigmoid)),
        Mistake(_LINEAR_LAYOUT, raises=r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"),
    ]))
register(Exercise(
    "expert_forward", 1, "expert_forward", _expert_cases,
    "x @ gate_up_proj[e] gives [T, 2F]: the first F columns are the gate, the last F the up projection",
    nudge="One matmul with gate_up_proj[e] gives gate and up side by side: which half is which?",
    mistakes=[
        Mistake("gate and up are swapped: the FIRST F columns of gate_up_proj[e] are the gate, the last F the up",
                wrong=_halves_swapped),
        Mistake("gate and up are two contiguous halves ([:, :F] and [:, F:]), not interleaved columns",
                wrong=_halves_interleaved),
        Mistake(_CHECKPOINT_LAYOUT, raises=r"mat1 and mat2 shapes|size mismatch|shapes cannot be multiplied"),
    ]))
register(Exercise(
    "all_experts_forward", 1, "all_experts_forward", _all_experts_cases,
    "torch.bmm([E,T,D], [E,D,2F]) → [E,T,2F]; split it in two halves along the last dim",
    nudge="torch.bmm multiplies matching pairs: batch e of x with expert e's weights, for every e at once.",
    mistakes=[
        Mistake("every expert must use its own weights: x_ETD[e] goes through gate_up_proj[e] and down_proj[e], "
                "not expert 0's", wrong=_first_expert_for_all),
        Mistake("gate and up are swapped: the FIRST F columns are the gate, the last F the up",
                wrong=_halves_swapped),
        Mistake("gate and up are two contiguous halves ([..., :F] and [..., F:]), not interleaved columns",
                wrong=_halves_interleaved),
        Mistake(_CHECKPOINT_LAYOUT, raises=r"shapes cannot be multiplied|size mismatch|Expected size|batch1"),
    ]))
