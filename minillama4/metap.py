"""MetaP: a per-layer initialisation scale and learning rate for every weight, so that the learning rate tuned on a
small model is still the best one on a wider or deeper model.

Meta's Llama 4 announcement says only that MetaP sets per-layer learning rates and initialisation scales, and that
the values chosen transfer across batch size, width, depth and training tokens. It published no formula and no
code. This file is a *reconstruction* from the public μP family, not Meta's rules:

* μP (Yang, Hu et al., "Tensor Programs V", arXiv 2203.03466, the Adam rows of its Table 3; code: microsoft/mup,
  EleutherAI/nanoGPT-mup): with Adam, a hidden matrix gets init std ∝ 1/√fan_in and learning rate ∝ 1/fan_in, an
  output matrix init std ∝ 1/fan_in and learning rate ∝ 1/fan_in, input embeddings and norm gains neither.
* CompleteP (Dey et al., arXiv 2505.01618; code: EleutherAI/nanoGPT-mup, branch completep), after depth-μP (Yang et
  al., "Tensor Programs VI", arXiv 2310.02244; Bordelon et al., arXiv 2309.16620): every residual branch is
  multiplied by (L/L₀)^-α with α = 1, and then no learning rate needs a depth factor (it would be (L/L₀)^(α-1)).
* u-μP (Blake et al., arXiv 2407.17465) moves every scale into the forward pass as a fixed multiplier. We go the
  other way: under Adam a fixed multiplier c on a weight is the same training as scaling that weight's init by c and
  its learning rate by c (Adam's step ignores the gradient's scale). Folding the branch multiplier and μP's 1/m
  output multiplier into init and learning rate keeps the architecture exactly Llama 4's: a MetaP model saves as an
  ordinary checkpoint, and MetaP is nothing but "per-layer learning rates and initialisation scales".

With m = D / D₀ (width multiplier) and d = L / L₀ (depth multiplier), relative to the base shape in the config
(`base_hidden_size`, `base_num_layers`), each group of weights gets, as multipliers of the standard init std
(`initializer_range`, 0.02) and of the scheduled learning rate:

    group        weights                                            init ×          lr ×
    embedding    embed_tokens                                       1               1          μP input layer
    norm         every RMSNorm gain                                 1 (ones)        1          μP vector; CompleteP d^(α-1) = 1
    hidden       q, k, v; gate/up of the dense FFN, shared expert   1/√m            1/m        μP hidden (Adam)
                 and routed experts (gate_up_proj)
    branch_out   o_proj; down_proj of every FFN and expert          1/(√m · d)      1/(m · d)  μP hidden × CompleteP branch 1/d
    router       router weight [E, D]                               1/m             1/m        μP output: its fan-out E is finite
    readout      lm_head                                            1/m             1/m        μP output (MuReadout's 1/m folded in)

Weight decay is scaled as 1/(lr ×) in each group, so that the fraction decayed per step, lr · wd, is the base model's
(CompleteP's choice). Every multiplier is 1 at the base shape: there MetaP is the standard parametrisation.

Choices we made where the sources leave room:
* The width grows by adding heads at a fixed head_dim (every Llama 4 has Dh = 128), so the attention scale 1/√Dh
  needs no μP change; inner widths (F, H·Dh) grow with D, so one multiplier m serves every matrix.
* The number of experts E does not appear. An expert is a hidden matrix whose fan-in (D, or F) does not depend on E;
  with top-k fixed (Llama 4: k = 1) each token's branch sums k experts whatever E is; each expert sees only about
  k/E of the tokens, but Adam's update size does not depend on how many tokens a gradient sums. Finer experts
  (E up, F down) change the down projections' fan-in F, which the rule above covers when F scales with D.
* The router is treated as an output layer (like lm_head) because its logits are E numbers, not a width.

    config.parametrization == "metap"
        → Llama4.__init__: standard init, then `scale_init_` multiplies each weight by its group's init ×
        → make_optimizer: `param_groups` gives AdamW one group per rule, each with its `lr_mult`;
          the training loop sets every group's lr = schedule(step) × lr_mult
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .config import Llama4Config

GROUPS = ("embedding", "norm", "hidden", "branch_out", "router", "readout")
ALPHA = 1.0  # CompleteP: residual branches scaled by d^-α (depth-μP would use 1/2)

_HIDDEN = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight",
           "experts.gate_up_proj")
_BRANCH_OUT = ("o_proj.weight", "down_proj.weight", "experts.down_proj")


class Scale(NamedTuple):
    init: float  # multiplier of the standard init std
    lr: float  # multiplier of the scheduled learning rate


def group_of(name: str) -> str:
    """The MetaP group of a text-model parameter, from its name (the checkpoint key without the model prefix)."""
    if name == "embed_tokens.weight":
        return "embedding"
    if name == "lm_head.weight":
        return "readout"
    if name == "norm.weight" or name.endswith("layernorm.weight"):
        return "norm"
    if name.endswith("router.weight"):
        return "router"
    if name.endswith(_BRANCH_OUT):
        return "branch_out"
    if name.endswith(_HIDDEN):
        return "hidden"
    raise ValueError(f"no MetaP rule for parameter {name!r}")


def residual_scale(depth_mult: float) -> float:
    """The multiplier of every residual branch, x + s · branch(x): s = d^-α (CompleteP, α = 1). MetaP folds it into
    the last weight of the branch (o_proj, down_proj), which is linear: s · (W h) = (s W) h."""
    return depth_mult ** -ALPHA


def init_multiplier(group: str, width_mult: float, depth_mult: float) -> float:
    """× the standard init std for a group (table in the module docstring)."""
    return {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5,
            "branch_out": width_mult ** -0.5 * residual_scale(depth_mult),
            "router": 1.0 / width_mult, "readout": 1.0 / width_mult}[_checked(group)]


def lr_multiplier(group: str, width_mult: float, depth_mult: float) -> float:
    """× the scheduled learning rate for a group (Adam; table in the module docstring). Only the branch output
    carries a depth factor: the branch multiplier folded into it (CompleteP's own d^(α-1) is 1 at α = 1)."""
    return {"embedding": 1.0, "norm": 1.0, "hidden": 1.0 / width_mult,
            "branch_out": residual_scale(depth_mult) / width_mult,
            "router": 1.0 / width_mult, "readout": 1.0 / width_mult}[_checked(group)]


def _checked(group: str) -> str:
    if group not in GROUPS:
        raise ValueError(f"unknown MetaP group {group!r}; groups are {', '.join(GROUPS)}")
    return group


def multipliers(config: Llama4Config) -> tuple[float, float]:
    """(m, d) = (D / D₀, L / L₀): how much wider and deeper the model is than its base shape."""
    return config.hidden_size / config.base_hidden_size, config.num_hidden_layers / config.base_num_layers


def scales(config: Llama4Config) -> dict[str, Scale]:
    """Each group's (init ×, lr ×) for this config: all 1 under "standard"."""
    if config.parametrization == "standard":
        return {g: Scale(1.0, 1.0) for g in GROUPS}
    m, d = multipliers(config)
    return {g: Scale(init_multiplier(g, m, d), lr_multiplier(g, m, d)) for g in GROUPS}


@torch.no_grad()
def scale_init_(model: nn.Module) -> None:
    """Turn a standard-initialised model into a MetaP-initialised one: N(0, σ²) · c is N(0, (cσ)²), so each weight
    is multiplied by its group's init multiplier (the RMSNorm gains stay ones)."""
    s = scales(model.config)
    for name, p in model.named_parameters():
        c = s[group_of(name)].init
        if c != 1.0:
            p.mul_(c)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups, one per MetaP group present (in order of first appearance): {"name", "params",
    "lr" = lr · lr_mult, "lr_mult", "weight_decay"}. Matrices decay with weight_decay / lr_mult (so lr · wd stays the base model's); norms do not."""
    s = scales(model.config)
    groups: dict[str, dict] = {}  # in the order the groups first appear in the model
    for name, p in model.named_parameters():
        g = group_of(name)
        if g not in groups:
            groups[g] = {"name": g, "params": [], "lr": lr * s[g].lr, "lr_mult": s[g].lr,
                         "weight_decay": 0.0 if g == "norm" else weight_decay / s[g].lr}
        groups[g]["params"].append(p)
    return list(groups.values())
