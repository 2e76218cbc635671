"""Chapter 13 exercises: MetaP's per-layer scales. The residual-branch scale folded into the branch's last weight,
the init multiplier and the learning-rate multiplier of each group of weights, and the AdamW groups that carry them.

Fill in each function between the markers. Notation: m = D / D₀ (how much wider the model is than its base shape),
d = L / L₀ (how much deeper). The groups (see `minillama4/metap.py`):

    embedding   embed_tokens
    norm        every RMSNorm gain
    hidden      q_proj, k_proj, v_proj; gate_proj and up_proj of a dense FFN or shared expert; experts.gate_up_proj
    branch_out  o_proj; down_proj of a dense FFN or shared expert; experts.down_proj (the last weight of a branch)
    router      feed_forward.router.weight
    readout     lm_head
"""

import torch

from minillama4.metap import group_of


def fold_residual_scale(params: dict[str, torch.Tensor], depth_mult: float) -> dict[str, torch.Tensor]:
    """CompleteP scales every residual branch: x + s · branch(x), with s = 1 / d (d = L / L₀). The branch ends in a
    linear map, so s · (W h) = (s W) h: the scale can live in the weights instead of the forward pass.

    Return a NEW dict with the same keys (checkpoint names such as "layers.0.self_attn.o_proj.weight") in which the
    last weight of every branch (o_proj, the down_proj of a dense FFN or shared expert, experts.down_proj) is
    multiplied by s and every other tensor is unchanged. Do not modify the input tensors."""
    ### BEGIN SOLUTION
    s = 1.0 / depth_mult  # CompleteP: d^-α with α = 1
    branch_out = ("o_proj.weight", "down_proj.weight", "experts.down_proj")  # the last weight of each branch
    return {name: p * s if name.endswith(branch_out) else p.clone() for name, p in params.items()}
    ### END SOLUTION


def init_multiplier(group: str, width_mult: float, depth_mult: float) -> float:
    """How much MetaP multiplies the standard init std (0.02) of a group's weights (Adam, μP + CompleteP):

        embedding, norm   1                 (the input layer's fan-in is the vocabulary: it does not grow)
        hidden            1 / √m            (std ∝ 1/√fan_in keeps each output coordinate the same size)
        branch_out        1 / (√m · d)      (a hidden weight with the residual scale 1/d folded in)
        router, readout   1 / m             (output layers: their fan-out does not grow; μP's 1/m output multiplier
                                             folded in)

    Raise ValueError for an unknown group name."""
    ### BEGIN SOLUTION
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5,
             "branch_out": width_mult ** -0.5 / depth_mult, "router": 1.0 / width_mult, "readout": 1.0 / width_mult}
    if group not in rules:
        raise ValueError(f"unknown group {group!r}")
    return rules[group]
    ### END SOLUTION


def lr_multiplier(group: str, width_mult: float, depth_mult: float) -> float:
    """How much MetaP multiplies the scheduled learning rate for a group's weights (Adam). Adam moves every entry of
    a matrix by about lr per step whatever its gradient, and a matrix with fan-in n adds n such moves into each
    output coordinate: the hidden and output matrices need lr ∝ 1/n.

        embedding, norm   1
        hidden            1 / m
        branch_out        1 / (m · d)       (the residual scale 1/d folded in: a multiplier c on a weight is, under
                                             Adam, the same training as init × c and lr × c)
        router, readout   1 / m

    Raise ValueError for an unknown group name."""
    ### BEGIN SOLUTION
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": 1.0 / width_mult, "branch_out": 1.0 / (width_mult * depth_mult),
             "router": 1.0 / width_mult, "readout": 1.0 / width_mult}
    if group not in rules:
        raise ValueError(f"unknown group {group!r}")
    return rules[group]
    ### END SOLUTION


def adamw_param_groups(named_params: list[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                       lr_mults: dict[str, float]) -> list[dict]:
    """AdamW parameter groups for MetaP: one group per MetaP group that has parameters (use `group_of(name)`), in
    the order the groups first appear in named_params, each a dict

        {"name": group, "params": [its parameters, in model order], "lr": lr · lr_mults[group],
         "lr_mult": lr_mults[group], "weight_decay": weight_decay / lr_mults[group]  (0.0 for "norm")}

    Dividing the decay by the multiplier keeps lr · weight_decay, the fraction of a weight decayed per step, the
    same as in the base model. Every parameter must be in exactly one group."""
    ### BEGIN SOLUTION
    groups: dict[str, dict] = {}
    for name, p in named_params:
        g = group_of(name)
        if g not in groups:
            mult = lr_mults[g]
            groups[g] = {"name": g, "params": [], "lr": lr * mult, "lr_mult": mult,
                         "weight_decay": 0.0 if g == "norm" else weight_decay / mult}
        groups[g]["params"].append(p)
    return list(groups.values())
    ### END SOLUTION
