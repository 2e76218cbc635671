"""Chapter 13 cases: MetaP's residual-branch scale folded into the weights, the init and learning-rate multipliers
of each group of weights, and the AdamW groups that carry them. Expected values come from the package:
`metap.group_of`, `metap.residual_scale`, `metap.init_multiplier`, `metap.lr_multiplier` and `metap.param_groups`.
Below them, the common wrong versions the grader recognises, with what it tells the learner."""

import math
from types import SimpleNamespace

import torch

from ...config import Llama4Config
from ...metap import GROUPS, group_of, init_multiplier, lr_multiplier, param_groups, residual_scale, scales
from ...model import Llama4
from .core import Case, Exercise, Mistake, compare_outputs, register

# (m, d) pairs where 1/m, 1/√m, 1/d, 1/√d and their products all differ, so each rule is told apart; the base shape
# (1, 1), where every multiplier is 1, comes last
SHAPES = [(4.0, 3.0), (2.0, 4.0), (8.0, 2.0), (0.5, 0.25), (1.0, 1.0)]


# ------------------------------------------------------------------------------------------------ a tiny model
def _config(m: int, d: int) -> Llama4Config:
    """A tiny MetaP model m times wider and d times deeper than its base: a dense layer (o_proj, gate/up/down_proj)
    and MoE layers (router, experts, shared expert)."""
    return Llama4Config.preset("toy").replace(
        vocab_size=32, hidden_size=8 * m, num_hidden_layers=2 * d, num_attention_heads=m, num_key_value_heads=1,
        head_dim=8, intermediate_size=4 * m, intermediate_size_mlp=6 * m, num_local_experts=2,
        moe_layers=list(range(1, 2 * d)), no_rope_layers=[1] * (2 * d - 1) + [0], parametrization="metap",
        base_hidden_size=8, base_num_layers=2)


def _model(m: int, d: int, seed: int) -> Llama4:
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        return Llama4(_config(m, d))


# ------------------------------------------------------------------------------------------------ fold_residual_scale
def _fold_probe(fn, params, depth_mult):
    """(what fn returned, the names of the inputs it changed)."""
    before = {k: (v, v.clone()) for k, v in params.items()}
    out = fn(params, depth_mult)
    changed = sorted(k for k, (v, copy) in before.items()
                     if params.get(k) is not v or not torch.equal(v, copy)) + sorted(set(params) - set(before))
    return out, changed


def _folded(params, depth_mult):
    """The package's fold: each branch's last weight (group branch_out) times the residual scale."""
    s = residual_scale(depth_mult)
    return {k: v * s if group_of(k) == "branch_out" else v.clone() for k, v in params.items()}


def _fold_cases():
    cases = []
    for seed, (m, d) in enumerate([(1, 3), (2, 2), (1, 1)]):
        params = {k: v.detach().clone() for k, v in _model(m, d, 1300 + seed).named_parameters()}
        cases.append(Case((params, float(d)), (_folded(params, float(d)), [])))
    params = cases[0].args[0]
    cases.append(Case((params, 0.5), (_folded(params, 0.5), [])))  # a shallower model than the base: branches grow
    return cases


def _compare_fold(got, expected):
    out, changed = got if isinstance(got, tuple) and len(got) == 2 else (got, [])
    want, _ = expected
    if changed:
        return False, math.inf, f"your function changed its input: {', '.join(changed[:3])}"
    if not isinstance(out, dict):
        return False, math.inf, f"returned {getattr(out, 'type_name', type(out).__name__)}, expected a dict"
    if set(out) != set(want):
        extra, missing = sorted(set(out) - set(want)), sorted(set(want) - set(out))
        return False, math.inf, f"keys differ: missing {missing[:3]}, unexpected {extra[:3]}"
    worst = 0.0
    for k in want:
        ok, err, msg = compare_outputs(out[k], want[k], False)
        worst = max(worst, err)
        if not ok:
            return False, worst, f"{k}: {msg}"
    return True, worst, ""


def _ratios(case, got) -> dict[str, float] | None:
    """Each output tensor's size relative to its input (mean |out| / mean |in|), by name; None if unreadable."""
    out = got[0]
    params = case.args[0]
    if not isinstance(out, dict) or set(out) != set(params):
        return None
    return {k: float(out[k].float().abs().mean() / params[k].float().abs().mean().clamp_min(1e-30)) for k in params
            if params[k].abs().sum() > 0}


def _fold_test(want):
    """The learner's output scales each tensor by want(name, d) (a float, within 1e-4)."""
    def test(case, got) -> bool:
        r = _ratios(case, got)
        d = case.args[1]
        return r is not None and all(math.isclose(v, want(k, d), rel_tol=1e-4) for k, v in r.items())
    return test


def _changed_input(case, got) -> bool:
    return bool(got[1])


def _on(names):
    return lambda k: k.endswith(names)


def _branch(k) -> bool:  # the last weight of a branch: o_proj, down_proj, experts.down_proj
    return group_of(k) == "branch_out"


def _inputs(k) -> bool:  # a branch's input projections: q/k/v, gate/up, experts.gate_up_proj
    return group_of(k) == "hidden"


def _fold_scaled(which, s=lambda d: 1 / d):
    return _fold_test(lambda k, d: s(d) if which(k) else 1.0)


register(Exercise(
    "fold_residual_scale", 13, "fold_residual_scale", _fold_cases,
    "s = 1 / depth_mult; return {name: p * s if name.endswith(('o_proj.weight', 'down_proj.weight', "
    "'experts.down_proj')) else p.clone() for name, p in params.items()}",
    nudge="A residual branch ends in one linear map; which weight is it in attention, in a dense FFN, in the shared "
          "expert and in the routed experts? Only those carry the branch's 1/d. Build a new dict: p * s, not p *= s.",
    probe=_fold_probe, compare=_compare_fold,
    mistakes=[
        Mistake("your function changed the caller's tensors (p.mul_(s), p *= s, or writing into params): build a "
                "NEW dict with p * s, and leave the input alone", test=_changed_input),
        Mistake("the depth factor went on every weight: only the LAST weight of each branch (o_proj, down_proj, "
                "experts.down_proj) carries the residual scale 1/d; embeddings, norms, q/k/v, gate/up and lm_head "
                "stay as they are", test=_fold_test(lambda k, d: 1 / d)),
        Mistake("you scaled the branch's INPUT projections (q/k/v, gate/up): s · (W_out h) = (s W_out) h, so the "
                "scale belongs on the branch's last projection (o_proj, down_proj, experts.down_proj)",
                test=lambda case, got: _fold_test(lambda k, d: 1 / d if _inputs(k) else 1.0)(case, got)
                or _fold_test(lambda k, d: 1 / d if _inputs(k) or _branch(k) else 1.0)(case, got)),
        Mistake("you multiplied by d: the residual scale is s = 1 / d (a deeper model adds more branches, each "
                "must be smaller)", test=_fold_scaled(_branch, lambda d: d)),
        Mistake("the residual scale was applied twice (1/d²): fold s = 1 / d into each branch's last weight once",
                test=_fold_scaled(_branch, lambda d: d ** -2)),
        Mistake("1/√d is depth-μP's α = 1/2: MetaP follows CompleteP, α = 1, s = 1 / d",
                test=_fold_scaled(_branch, lambda d: d ** -0.5)),
        Mistake("you missed the routed experts' down projection: its name is 'experts.down_proj' (no '.weight'), "
                "it ends the experts' branch too",
                test=_fold_scaled(lambda k: _branch(k) and not k.endswith("experts.down_proj"))),
        Mistake("only attention's o_proj was scaled: the feed-forward branch ends in down_proj (dense FFN, shared "
                "expert) and experts.down_proj, which need 1/d too", test=_fold_scaled(_on("o_proj.weight"))),
    ]))


# ------------------------------------------------------------------------------------------------ multiplier tables
def _table_probe(fn, width_mult, depth_mult):
    """(fn(group, m, d) for every group, in GROUPS order; what fn does with an unknown group name)."""
    values = tuple(fn(g, width_mult, depth_mult) for g in GROUPS)
    try:
        bad = fn("attention", width_mult, depth_mult)
        unknown = f"returned {bad!r}"
    except ValueError:
        unknown = "ValueError"
    except Exception as e:  # noqa: BLE001  (a KeyError from a dict look-up is the usual one)
        unknown = f"raised {type(e).__name__}"
    return values, unknown


def _table_cases(rule):
    return [Case((m, d), (tuple(rule(g, m, d) for g in GROUPS), "ValueError")) for m, d in SHAPES]


def _compare_table(got, expected):
    if not (isinstance(got, tuple) and len(got) == 2):
        return False, math.inf, "the grader could not read your output"
    values, unknown = got
    want, want_unknown = expected
    worst = 0.0
    for g, a, b in zip(GROUPS, values, want):
        ok, err, msg = compare_outputs(a, b, False)
        worst = max(worst, err)
        if not ok:
            return False, worst, f"group {g!r}: {msg}"
    if unknown != want_unknown:
        return False, worst, f"an unknown group name 'attention' {unknown}: raise ValueError"
    return True, worst, ""


def _value(got, group) -> float | None:
    v = got[0][GROUPS.index(group)]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _is(group, rule):
    """The learner's multiplier for `group` equals rule(m, d) where the package's does not."""
    def test(case, got) -> bool:
        m, d = case.args
        v, want = _value(got, group), rule(m, d)
        right = case.expected[0][GROUPS.index(group)]
        return v is not None and not math.isclose(want, right, rel_tol=1e-6) and math.isclose(v, want, rel_tol=1e-6)
    return test


def _any(*tests):
    return lambda case, got: any(t(case, got) for t in tests)


def _no_value_error(case, got) -> bool:
    return got[1] != "ValueError" and all(_value(got, g) is not None and math.isclose(
        _value(got, g), case.expected[0][i], rel_tol=1e-6) for i, g in enumerate(GROUPS))


_OUTPUTS = ("router", "readout")

register(Exercise(
    "init_multiplier", 13, "init_multiplier", lambda: _table_cases(init_multiplier),
    "embedding, norm: 1; hidden: m ** -0.5; branch_out: m ** -0.5 / d; router, readout: 1 / m; "
    "anything else: raise ValueError",
    nudge="Init keeps each output coordinate the same size as the model widens: std ∝ 1/√fan_in for a hidden "
          "matrix. Which groups have a fan-in that does not grow, which are output layers, and which one is the end "
          "of a residual branch?",
    probe=_table_probe, compare=_compare_table,
    mistakes=[
        Mistake("the hidden init is 1/√m (std ∝ 1/√fan_in keeps each output coordinate the same size); 1/m is the "
                "learning-rate rule, or the output layers' init", test=_is("hidden", lambda m, d: 1 / m)),
        Mistake("the output layers (router, lm_head) get 1/m, not 1/√m: their fan-out does not grow, and μP's 1/m "
                "output multiplier is folded into their init",
                test=_any(*(_is(g, lambda m, d: m ** -0.5) for g in _OUTPUTS))),
        Mistake("the embedding's fan-in is the vocabulary, which does not grow with the width: its init stays 1 "
                "(and so do the norm gains)",
                test=_any(*(_is(g, r) for g in ("embedding", "norm") for r in (lambda m, d: m ** -0.5,
                                                                                lambda m, d: 1 / m)))),
        Mistake("the depth factor went on every weight: only branch_out (the branch's last projection) carries "
                "the residual scale 1/d", test=_any(_is("hidden", lambda m, d: m ** -0.5 / d),
                                                    *(_is(g, lambda m, d: 1 / (m * d)) for g in _OUTPUTS))),
        Mistake("branch_out is a hidden weight with the residual scale folded in: 1/(√m · d), you left out the 1/d",
                test=_is("branch_out", lambda m, d: m ** -0.5)),
        Mistake("the residual scale was applied twice: branch_out is 1/(√m · d), not 1/(√m · d²)",
                test=_is("branch_out", lambda m, d: m ** -0.5 / d ** 2)),
        Mistake("1/√d is depth-μP's α = 1/2: MetaP follows CompleteP, α = 1, branch_out is 1/(√m · d)",
                test=_is("branch_out", lambda m, d: (m * d) ** -0.5)),
        Mistake("you multiplied by the width or depth: a wider or deeper model needs SMALLER init scales (1/√m, "
                "1/m, 1/d)", test=_any(*(_is(g, r) for g in ("hidden", "branch_out", "readout")
                                          for r in (lambda m, d: m ** 0.5, lambda m, d: m,
                                                    lambda m, d: m ** 0.5 * d)))),
        Mistake("an unknown group name must raise ValueError (a misspelt group would otherwise get a silent scale)",
                test=_no_value_error),
    ]))

register(Exercise(
    "lr_multiplier", 13, "lr_multiplier", lambda: _table_cases(lr_multiplier),
    "embedding, norm: 1; hidden: 1 / m; branch_out: 1 / (m · d); router, readout: 1 / m; anything else: raise "
    "ValueError",
    nudge="Adam moves every entry by about lr per step, whatever the gradient's size; how many such moves add up in "
          "one output coordinate of a hidden matrix? Which groups are vectors or look-up tables, and which group "
          "carries the folded residual scale?",
    probe=_table_probe, compare=_compare_table,
    mistakes=[
        Mistake("μP keeps the embedding's learning rate (and the norms'): a look-up row is not a sum over the width, "
                "so no width multiplier there",
                test=_any(*(_is(g, r) for g in ("embedding", "norm") for r in (lambda m, d: 1 / m,
                                                                                lambda m, d: m ** -0.5)))),
        Mistake("that is the init rule (1/√m): with Adam a hidden matrix's learning rate is 1/m, since each update "
                "entry is about lr whatever the gradient and fan-in m of them add up",
                test=_any(_is("hidden", lambda m, d: m ** -0.5), _is("branch_out", lambda m, d: m ** -0.5 / d))),
        Mistake("branch_out carries the folded residual scale 1/d in its learning rate too (a multiplier c on a "
                "weight is, under Adam, init × c and lr × c): 1/(m · d)", test=_is("branch_out", lambda m, d: 1 / m)),
        Mistake("the depth factor went on every weight: only branch_out (the branch's last projection) carries 1/d",
                test=_any(_is("hidden", lambda m, d: 1 / (m * d)), *(_is(g, lambda m, d: 1 / (m * d))
                                                                      for g in _OUTPUTS))),
        Mistake("the output layers (router, lm_head) learn at 1/m too: their fan-in is the width",
                test=_any(*(_is(g, lambda m, d: 1.0) for g in _OUTPUTS))),
        Mistake("you multiplied by the width or depth: a wider or deeper model needs SMALLER learning rates",
                test=_any(*(_is(g, r) for g in ("hidden", "branch_out", "readout")
                            for r in (lambda m, d: m, lambda m, d: m * d)))),
        Mistake("an unknown group name must raise ValueError (a misspelt group would otherwise get a silent rate)",
                test=_no_value_error),
    ]))


# ------------------------------------------------------------------------------------------------ adamw_param_groups
def _describe(groups, named_params):
    """Groups as plain data: each as {"name", "params" (indices into named_params), "lr", "lr_mult",
    "weight_decay"}; a parameter that is not one of named_params' is -1."""
    index = {id(p): i for i, (_, p) in enumerate(named_params)}
    if not isinstance(groups, (list, tuple)):
        return f"a {type(groups).__name__}"
    out = []
    for g in groups:
        if not isinstance(g, dict):
            out.append(f"a {type(g).__name__}")
            continue
        params = g.get("params", [])
        params = list(params) if isinstance(params, (list, tuple)) else [params]
        out.append({"name": g.get("name"), "params": [index.get(id(p), -1) for p in params],
                    **{k: g.get(k) for k in ("lr", "lr_mult", "weight_decay")}})
    return out


def _groups_probe(fn, named_params, lr, weight_decay, lr_mults):
    return _describe(fn(named_params, lr, weight_decay, lr_mults), named_params)


def _groups_case(named, config, lr, wd):
    model = SimpleNamespace(config=config, named_parameters=lambda: iter(named))  # param_groups reads only these
    lr_mults = {g: s.lr for g, s in scales(config).items()}
    return Case((named, lr, wd, lr_mults), _describe(param_groups(model, lr, wd), named))


def _groups_cases():
    cases = []
    for seed, (m, d, lr, wd) in enumerate([(2, 2, 3e-3, 0.1), (4, 1, 1e-2, 0.05)]):
        named = list(_model(m, d, 1310 + seed).named_parameters())
        cases.append(_groups_case(named, _config(m, d), lr, wd))
    named = list(_model(2, 1, 1312).named_parameters())[::-1]  # another order (lm_head first): the groups follow it
    cases.append(_groups_case(named, _config(2, 1), 1e-3, 0.1))
    return cases


def _compare_groups(got, expected):
    if not isinstance(got, list) or not all(isinstance(g, dict) for g in got):
        return False, math.inf, f"expected a list of dicts, got {str(got)[:200]}"
    names, want_names = [g["name"] for g in got], [g["name"] for g in expected]
    if names != want_names:
        shown = names if len(names) <= 8 else names[:8] + ["…"]
        return False, math.inf, f"{len(names)} groups {shown}, expected {want_names}"
    worst = 0.0
    for g, w in zip(got, expected):
        if g["params"] != w["params"]:
            return False, math.inf, f"group {w['name']!r}: parameters {g['params']}, expected {w['params']} " \
                                    "(positions in named_params; -1: not one of them)"
        for k in ("lr", "lr_mult", "weight_decay"):
            ok, err, msg = compare_outputs(g[k], w[k], False)
            worst = max(worst, err)
            if not ok:
                return False, worst, f"group {w['name']!r}, {k}: {msg}"
    return True, worst, ""


def _groups_ok(got, expected) -> bool:
    return isinstance(got, list) and all(isinstance(g, dict) for g in got) and \
        [g["name"] for g in got] == [g["name"] for g in expected] and \
        all(g["params"] == w["params"] for g, w in zip(got, expected))


def _field(key, rule):
    """Right groups; `key` of every group equals rule(group, case) and differs from the expected somewhere."""
    def test(case, got) -> bool:
        if not _groups_ok(got, case.expected):
            return False
        lr, wd, mults = case.args[1], case.args[2], case.args[3]
        vals = [(g[key], rule(w["name"], lr, wd, mults)) for g, w in zip(got, case.expected)]
        return all(isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) for a, b in vals) \
            and any(not math.isclose(g[key], w[key], rel_tol=1e-6, abs_tol=1e-12)
                    for g, w in zip(got, case.expected))
    return test


def _wd(norm=0.0, embedding=None, rule=lambda wd, m: wd / m):
    def f(group, lr, wd, mults):
        if group == "norm":
            return norm if norm is not None else rule(wd, mults[group])
        if group == "embedding" and embedding is not None:
            return embedding
        return rule(wd, mults[group])
    return f


def _norm_decayed(case, got) -> bool:
    return _field("weight_decay", _wd(norm=None))(case, got) or \
        _field("weight_decay", _wd(norm=None, rule=lambda wd, m: wd))(case, got)


def _names_not_groups(case, got) -> bool:
    return isinstance(got, list) and all(isinstance(g, dict) for g in got) and \
        any(g["name"] not in GROUPS for g in got)


def _one_per_param(case, got) -> bool:
    return isinstance(got, list) and len(got) == len(case.args[0]) and all(
        isinstance(g, dict) and len(g["params"]) == 1 for g in got)


def _fixed_order(case, got) -> bool:
    if not (isinstance(got, list) and all(isinstance(g, dict) for g in got)):
        return False
    names, want = [g["name"] for g in got], [g["name"] for g in case.expected]
    return names != want and sorted(names) == sorted(want)


register(Exercise(
    "adamw_param_groups", 13, "adamw_param_groups", _groups_cases,
    "groups = {}; for name, p in named_params: g = group_of(name); if g not in groups: groups[g] = {'name': g, "
    "'params': [], 'lr': lr * lr_mults[g], 'lr_mult': lr_mults[g], 'weight_decay': 0.0 if g == 'norm' else "
    "weight_decay / lr_mults[g]}; groups[g]['params'].append(p); return list(groups.values())",
    nudge="group_of(name) says which MetaP group a parameter is in: one dict per group, created the first time the "
          "group is seen. What must lr · weight_decay stay equal to, and which group is not decayed at all?",
    probe=_groups_probe, compare=_compare_groups,
    mistakes=[
        Mistake("one group per parameter: AdamW needs one group per MetaP group (key the dict by group_of(name))",
                test=_one_per_param),
        Mistake("your group names are not MetaP groups: key the groups by group_of(name) ('embedding', 'norm', "
                "'hidden', 'branch_out', 'router', 'readout')", test=_names_not_groups),
        Mistake("the groups must come in the order they first appear in named_params, not in a fixed order",
                test=_fixed_order),
        Mistake("lr is the scheduled rate times the group's multiplier: 'lr': lr * lr_mults[group]",
                test=_field("lr", lambda g, lr, wd, mults: lr)),
        Mistake("the norm gains are not decayed: weight_decay 0.0 for the 'norm' group", test=_norm_decayed),
        Mistake("MetaP decays the embedding like the other matrices (weight_decay / lr_mult); only the norms "
                "get 0", test=_field("weight_decay", _wd(embedding=0.0))),
        Mistake("divide the decay by the multiplier, weight_decay / lr_mult: AdamW decays lr · weight_decay of a "
                "weight per step, and that fraction must stay the base model's",
                test=_any(_field("weight_decay", _wd(rule=lambda wd, m: wd)),
                          _field("weight_decay", _wd(rule=lambda wd, m: wd * m)))),
    ]))
