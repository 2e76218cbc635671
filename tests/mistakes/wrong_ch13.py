"""Chapter 13: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "fold_residual_scale": [
        ("in-place-mul", '''
def fold_residual_scale(params, depth_mult):
    for name, p in params.items():
        if name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj")):
            p.mul_(1.0 / depth_mult)
    return dict(params)
''', ["changed", "NEW dict"]),
        ("writes-into-params", '''
def fold_residual_scale(params, depth_mult):
    for name in list(params):
        if "o_proj" in name or "down_proj" in name:
            params[name] = params[name] / depth_mult
    return params
''', ["changed the caller"]),
        ("every-weight", '''
def fold_residual_scale(params, depth_mult):
    return {name: p / depth_mult for name, p in params.items()}
''', ["every weight", "LAST weight"]),
        ("input-projections", '''
def fold_residual_scale(params, depth_mult):
    s = 1.0 / depth_mult
    first = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight",
             "experts.gate_up_proj")
    return {name: p * s if name.endswith(first) else p.clone() for name, p in params.items()}
''', ["INPUT projections", "last projection"]),
        ("times-d", '''
def fold_residual_scale(params, depth_mult):
    out = {}
    for name, p in params.items():
        out[name] = p * depth_mult if group_of(name) == "branch_out" else p.clone()
    return out
''', ["multiplied by d", "1 / d"]),
        ("applied-twice", '''
def fold_residual_scale(params, depth_mult):
    s = 1.0 / depth_mult
    out = {name: p * s if group_of(name) == "branch_out" else p.clone() for name, p in params.items()}
    for name in out:  # and the residual scale of the branch itself
        if group_of(name) == "branch_out":
            out[name] = out[name] * s
    return out
''', ["twice"]),
        ("sqrt-depth", '''
def fold_residual_scale(params, depth_mult):
    s = depth_mult ** -0.5
    return {name: p * s if group_of(name) == "branch_out" else p.clone() for name, p in params.items()}
''', ["α = 1", "depth-μP"]),
        ("misses-experts", '''
def fold_residual_scale(params, depth_mult):
    return {name: p / depth_mult if name.endswith(("o_proj.weight", "down_proj.weight")) else p.clone()
            for name, p in params.items()}
''', ["experts.down_proj", "missed"]),
        ("attention-only", '''
def fold_residual_scale(params, depth_mult):
    return {name: p / depth_mult if "o_proj" in name else p.clone() for name, p in params.items()}
''', ["only attention", "down_proj"]),
    ],
    "init_multiplier": [
        ("hidden-1/m", '''
def init_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": 1 / width_mult, "branch_out": 1 / (width_mult * depth_mult),
             "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["hidden init is 1/√m"]),
        ("outputs-like-hidden", '''
import math
def init_multiplier(group, width_mult, depth_mult):
    if group in ("embedding", "norm"):
        return 1.0
    if group in ("hidden", "router", "readout"):
        return 1 / math.sqrt(width_mult)
    if group == "branch_out":
        return 1 / math.sqrt(width_mult) / depth_mult
    raise ValueError(group)
''', ["output layers", "1/m"]),
        ("embedding-by-fan-in", '''
def init_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": width_mult ** -0.5, "norm": 1.0, "hidden": width_mult ** -0.5,
             "branch_out": width_mult ** -0.5 / depth_mult, "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["embedding", "vocabulary"]),
        ("depth-everywhere", '''
def init_multiplier(group, width_mult, depth_mult):
    base = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5, "branch_out": width_mult ** -0.5,
            "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in base:
        raise ValueError(group)
    return base[group] / depth_mult
''', ["every weight", "branch_out"]),
        ("no-depth", '''
def init_multiplier(group, width_mult, depth_mult):
    if group in ("embedding", "norm"):
        return 1.0
    if group in ("hidden", "branch_out"):
        return width_mult ** -0.5
    if group in ("router", "readout"):
        return 1.0 / width_mult
    raise ValueError(f"unknown group {group}")
''', ["left out the 1/d"]),
        ("depth-twice", '''
def init_multiplier(group, width_mult, depth_mult):
    s = 1 / depth_mult
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5,
             "branch_out": width_mult ** -0.5 * s * s, "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["twice"]),
        ("sqrt-depth", '''
def init_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5,
             "branch_out": (width_mult * depth_mult) ** -0.5, "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["α = 1", "depth-μP"]),
        ("grows-with-width", '''
def init_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** 0.5,
             "branch_out": width_mult ** 0.5 / depth_mult, "router": width_mult, "readout": width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["SMALLER"]),
        ("no-value-error", '''
def init_multiplier(group, width_mult, depth_mult):
    return {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5, "branch_out": width_mult ** -0.5 / depth_mult,
            "router": 1 / width_mult, "readout": 1 / width_mult}.get(group, 1.0)
''', ["ValueError"]),
        ("key-error", '''
def init_multiplier(group, width_mult, depth_mult):
    return {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5, "branch_out": width_mult ** -0.5 / depth_mult,
            "router": 1 / width_mult, "readout": 1 / width_mult}[group]
''', ["ValueError"]),
    ],
    "lr_multiplier": [
        ("embedding-1/m", '''
def lr_multiplier(group, width_mult, depth_mult):
    if group == "norm":
        return 1.0
    if group in ("embedding", "hidden", "router", "readout"):
        return 1.0 / width_mult
    if group == "branch_out":
        return 1.0 / (width_mult * depth_mult)
    raise ValueError(group)
''', ["μP keeps the embedding"]),
        ("like-init", '''
def lr_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult ** -0.5, "branch_out": width_mult ** -0.5 / depth_mult,
             "router": 1 / width_mult, "readout": 1 / width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["init rule", "1/m"]),
        ("branch-without-depth", '''
def lr_multiplier(group, width_mult, depth_mult):
    if group in ("embedding", "norm"):
        return 1.0
    if group in ("hidden", "branch_out", "router", "readout"):
        return 1.0 / width_mult
    raise ValueError(group)
''', ["folded residual scale"]),
        ("depth-everywhere", '''
def lr_multiplier(group, width_mult, depth_mult):
    if group in ("embedding", "norm"):
        return 1.0
    if group in ("hidden", "branch_out", "router", "readout"):
        return 1.0 / (width_mult * depth_mult)
    raise ValueError(group)
''', ["every weight"]),
        ("outputs-at-full-rate", '''
def lr_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": 1 / width_mult, "branch_out": 1 / (width_mult * depth_mult),
             "router": 1.0, "readout": 1.0}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["output layers"]),
        ("grows-with-width", '''
def lr_multiplier(group, width_mult, depth_mult):
    rules = {"embedding": 1.0, "norm": 1.0, "hidden": width_mult, "branch_out": width_mult * depth_mult,
             "router": width_mult, "readout": width_mult}
    if group not in rules:
        raise ValueError(group)
    return rules[group]
''', ["SMALLER"]),
        ("returns-none", '''
def lr_multiplier(group, width_mult, depth_mult):
    if group in ("embedding", "norm"):
        return 1.0
    if group in ("hidden", "router", "readout"):
        return 1.0 / width_mult
    if group == "branch_out":
        return 1.0 / width_mult / depth_mult
''', ["ValueError"]),
    ],
    "adamw_param_groups": [
        ("one-per-parameter", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = []
    for name, p in named_params:
        g = group_of(name)
        m = lr_mults[g]
        groups.append({"name": g, "params": [p], "lr": lr * m, "lr_mult": m,
                       "weight_decay": 0.0 if g == "norm" else weight_decay / m})
    return groups
''', ["one group per parameter"]),
        ("keyed-by-last-name", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        key = name.split(".")[-2]
        g = group_of(name)
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                           "weight_decay": 0.0 if g == "norm" else weight_decay / lr_mults[g]}
        groups[key]["params"].append(p)
    return list(groups.values())
''', ["group_of"]),
        ("fixed-order", '''
from minillama4.metap import GROUPS
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    out = []
    for g in GROUPS:
        ps = [p for name, p in named_params if group_of(name) == g]
        if ps:
            out.append({"name": g, "params": ps, "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                        "weight_decay": 0.0 if g == "norm" else weight_decay / lr_mults[g]})
    return out
''', ["order they first appear"]),
        ("lr-not-multiplied", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        groups.setdefault(g, {"name": g, "params": [], "lr": lr, "lr_mult": lr_mults[g],
                              "weight_decay": 0.0 if g == "norm" else weight_decay / lr_mults[g]})["params"].append(p)
    return list(groups.values())
''', ["lr_mults\\[group\\]"]),
        ("norms-decayed", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        if g not in groups:
            groups[g] = {"name": g, "params": [], "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                         "weight_decay": weight_decay / lr_mults[g]}
        groups[g]["params"].append(p)
    return list(groups.values())
''', ["norm gains are not decayed"]),
        ("embedding-not-decayed", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        if g not in groups:
            decay = 0.0 if g in ("norm", "embedding") else weight_decay / lr_mults[g]
            groups[g] = {"name": g, "params": [], "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                         "weight_decay": decay}
        groups[g]["params"].append(p)
    return list(groups.values())
''', ["MetaP decays the embedding"]),
        ("decay-not-divided", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        if g not in groups:
            groups[g] = {"name": g, "params": [], "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                         "weight_decay": 0.0 if g == "norm" else weight_decay}
        groups[g]["params"].append(p)
    return list(groups.values())
''', ["weight_decay / lr_mult"]),
        ("decay-multiplied", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        if g not in groups:
            groups[g] = {"name": g, "params": [], "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
                         "weight_decay": 0.0 if g == "norm" else weight_decay * lr_mults[g]}
        groups[g]["params"].append(p)
    return list(groups.values())
''', ["divide the decay"]),
    ],
}

RIGHT = {
    "fold_residual_scale": [("loop-with-group_of", '''
def fold_residual_scale(params, depth_mult):
    out = {}
    for name, p in params.items():
        out[name] = p / depth_mult if group_of(name) == "branch_out" else p  # unchanged tensors may be shared
    return out
'''), ("torch-mul", '''
def fold_residual_scale(params, depth_mult):
    last = ("self_attn.o_proj.weight", "feed_forward.down_proj.weight", "shared_expert.down_proj.weight",
            "experts.down_proj")
    return {k: torch.mul(v, 1 / depth_mult) if k.endswith(last) else v.detach().clone() for k, v in params.items()}
''')],
    "init_multiplier": [("if-chain", '''
import math
def init_multiplier(group, width_mult, depth_mult):
    if group == "embedding" or group == "norm":
        return 1
    if group == "hidden":
        return 1 / math.sqrt(width_mult)
    if group == "branch_out":
        return 1 / (math.sqrt(width_mult) * depth_mult)
    if group in ("router", "readout"):
        return width_mult ** -1
    raise ValueError(f"no init rule for {group}")
''')],
    "lr_multiplier": [("match", '''
def lr_multiplier(group, width_mult, depth_mult):
    match group:
        case "embedding" | "norm":
            return 1.0
        case "hidden" | "router" | "readout":
            return 1.0 / width_mult
        case "branch_out":
            return 1.0 / width_mult / depth_mult
    raise ValueError(group)
''')],
    "adamw_param_groups": [("defaultdict-and-ndim", '''
from collections import defaultdict
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    params = defaultdict(list)
    for name, p in named_params:  # dicts keep insertion order: the order groups first appear
        params[group_of(name)].append(p)
    return [{"name": g, "params": ps, "lr": lr * lr_mults[g], "lr_mult": lr_mults[g],
             "weight_decay": 0.0 if ps[0].ndim == 1 else weight_decay / lr_mults[g]} for g, ps in params.items()]
'''), ("setdefault", '''
def adamw_param_groups(named_params, lr, weight_decay, lr_mults):
    groups = {}
    for name, p in named_params:
        g = group_of(name)
        mult = lr_mults[g]
        groups.setdefault(g, dict(name=g, params=[], lr=lr * mult, lr_mult=mult,
                                  weight_decay=weight_decay / mult if g != "norm" else 0.0))["params"].append(p)
    return [groups[g] for g in groups]
''')],
}
