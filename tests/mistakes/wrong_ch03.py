"""Chapter 03: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

_MOE = '''
def moe_forward(x_TD, router_w_ED, gate_up_proj_ED2F, down_proj_EFD, shared_gate_FD, shared_up_FD, shared_down_DF,
                top_k):
    logits = x_TD @ router_w_ED.T
    vals, idx = torch.topk(logits, top_k, dim=-1)
    {scores}
    out = torch.zeros_like(x_TD)
    for t in range(x_TD.shape[0]):
        for j in range(top_k):
            e = idx[t, j]
            {expert}
    {shared}
'''
_SIGMOID = "scores = torch.sigmoid(vals)"
_ON_INPUT = '''h = (scores[t, j] * x_TD[t]) @ gate_up_proj_ED2F[e]
            g, u = h.chunk(2)
            out[t] += (F.silu(g) * u) @ down_proj_EFD[e]'''
_SHARED = "return out + (F.silu(x_TD @ shared_gate_FD.T) * (x_TD @ shared_up_FD.T)) @ shared_down_DF.T"


def _moe(scores=_SIGMOID, expert=_ON_INPUT, shared=_SHARED):
    return _MOE.format(scores=scores, expert=expert, shared=shared)


WRONG = {
    "moe_forward": [
        ("softmax-over-experts", _moe(scores="scores = logits.softmax(dim=-1).gather(1, idx)"), ["softmax", "sigmoid"]),
        ("softmax-over-top-k", _moe(scores="scores = F.softmax(vals, dim=-1)"), ["renormalised"]),
        ("sigmoid-renormalised", _moe(scores="scores = vals.sigmoid() / vals.sigmoid().sum(dim=1, keepdim=True)"),
         ["renormalised"]),
        ("no-score", _moe(expert='''g, u = (x_TD[t] @ gate_up_proj_ED2F[e]).chunk(2)
            out[t] += (F.silu(g) * u) @ down_proj_EFD[e]'''), ["not scaled"]),
        ("score-on-output", _moe(expert='''g, u = (x_TD[t] @ gate_up_proj_ED2F[e]).chunk(2)
            out[t] += scores[t, j] * ((F.silu(g) * u) @ down_proj_EFD[e])'''), ["OUTPUT", "INPUT"]),
        ("no-shared-expert", _moe(shared="return out"), ["shared expert is missing"]),
        ("shared-weights-not-transposed",
         _moe(shared="return out + (F.silu(x_TD @ shared_gate_FD) * (x_TD @ shared_up_FD)) @ shared_down_DF"),
         [r"\[out, in\]"]),
        ("routed-weights-transposed", _moe(expert='''h = (scores[t, j] * x_TD[t]) @ gate_up_proj_ED2F[e].T
            g, u = h.chunk(2)
            out[t] += (F.silu(g) * u) @ down_proj_EFD[e].T'''), ["checkpoint layout"]),
        ("assigned-not-added", '''
def moe_forward(x_TD, router_w_ED, gate_up_proj_ED2F, down_proj_EFD, shared_gate_FD, shared_up_FD, shared_down_DF,
                top_k):
    logits = x_TD @ router_w_ED.t()
    top, idx = logits.topk(top_k, dim=-1)
    scores = top.sigmoid()
    routed = torch.zeros_like(x_TD)
    for e in range(router_w_ED.shape[0]):
        rows, slots = torch.where(idx == e)
        h = x_TD[rows] * scores[rows, slots].unsqueeze(1)
        gate, up = (h @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        routed[rows] = (F.silu(gate) * up) @ down_proj_EFD[e]
    shared = (F.silu(x_TD @ shared_gate_FD.t()) * (x_TD @ shared_up_FD.t())) @ shared_down_DF.t()
    return shared + routed
''', ["instead of adding"]),
    ],
    "load_balancing_loss": [
        ("first-choice-only", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    top1 = router_logits_TE.argmax(dim=-1)
    f = torch.bincount(top1, minlength=E) / T
    P = router_logits_TE.softmax(dim=-1).mean(dim=0)
    return E * (f * P).sum()
''', ["first choice"]),
        ("divided-by-T", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    idx = router_logits_TE.topk(top_k, dim=-1).indices
    f = F.one_hot(idx, E).sum(dim=(0, 1)).float() / T
    P = router_logits_TE.softmax(dim=-1).mean(dim=0)
    return E * torch.dot(f, P)
''', ["divided the counts by T"]),
        ("sigmoid-probabilities", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    idx = router_logits_TE.topk(top_k, dim=-1).indices
    f = torch.bincount(idx.flatten(), minlength=E) / (T * top_k)
    P = torch.sigmoid(router_logits_TE).mean(0)
    return E * (f * P).sum()
''', ["not the sigmoid"]),
        ("softmax-over-tokens", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    idx = router_logits_TE.topk(top_k, dim=-1).indices
    f = torch.bincount(idx.flatten(), minlength=E) / (T * top_k)
    P = torch.softmax(router_logits_TE, dim=0).mean(0)
    return E * (f * P).sum()
''', ["not over the tokens"]),
        ("soft-fractions", '''
def load_balancing_loss(router_logits_TE, top_k):
    E = router_logits_TE.shape[-1]
    probs = router_logits_TE.softmax(-1)
    f = probs.mean(0)
    P = probs.mean(0)
    return E * (f * P).sum()
''', ["hard count"]),
        ("no-factor-E", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    idx = router_logits_TE.topk(top_k, dim=-1).indices
    f = torch.bincount(idx.flatten(), minlength=E) / (T * top_k)
    P = router_logits_TE.softmax(-1).mean(0)
    return (f * P).sum()
''', ["factor E"]),
        ("mean-over-experts", '''
def load_balancing_loss(router_logits_TE, top_k):
    T, E = router_logits_TE.shape
    idx = router_logits_TE.topk(top_k, dim=-1).indices
    f = torch.bincount(idx.flatten(), minlength=E) / (T * top_k)
    P = router_logits_TE.softmax(-1).mean(0)
    return E * (f * P).mean()
''', ["factor E"]),
    ],
    "router_z_loss": [
        ("square-of-mean", '''
def router_z_loss(router_logits_TE):
    return torch.logsumexp(router_logits_TE, dim=-1).mean() ** 2
''', ["square each token"]),
        ("max-logit", '''
def router_z_loss(router_logits_TE):
    z = router_logits_TE.max(dim=-1).values
    return (z ** 2).mean()
''', ["max logit"]),
        ("squared-logits", '''
def router_z_loss(router_logits_TE):
    return router_logits_TE.pow(2).mean()
''', ["not the logits themselves"]),
        ("squared-logits-per-token", '''
def router_z_loss(router_logits_TE):
    return (router_logits_TE ** 2).sum(dim=-1).mean()
''', ["not the logits themselves"]),
        ("summed-over-tokens", '''
def router_z_loss(router_logits_TE):
    return torch.logsumexp(router_logits_TE, dim=-1).pow(2).sum()
''', ["do not sum"]),
        ("logsumexp-over-tokens", '''
def router_z_loss(router_logits_TE):
    return torch.logsumexp(router_logits_TE, dim=0).square().mean()
''', ["not over the tokens"]),
        ("naive-log-sum-exp", '''
def router_z_loss(router_logits_TE):
    z = torch.log(torch.exp(router_logits_TE).sum(dim=-1))
    return (z * z).mean()
''', ["overflow"]),
    ],
    "moe_layer_indices": [
        ("even-layers", '''
def moe_layer_indices(num_layers, interleave_step):
    return [i for i in range(num_layers) if i % interleave_step == 0]
''', ["LAST of each group", "not 0, 2, 4"]),
        ("one-based", '''
def moe_layer_indices(num_layers, interleave_step):
    return [i for i in range(1, num_layers + 1) if i % interleave_step == 0]
''', ["0-based"]),
        ("starts-at-1", '''
def moe_layer_indices(num_layers, interleave_step):
    return list(range(1, num_layers, interleave_step))
''', ["not always 1"]),
        ("returns-range", '''
def moe_layer_indices(num_layers, interleave_step):
    return range(interleave_step - 1, num_layers, interleave_step)
''', ["plain Python list"]),
        ("returns-tensor", '''
def moe_layer_indices(num_layers, interleave_step):
    i = torch.arange(num_layers)
    return i[(i + 1) % interleave_step == 0]
''', ["plain Python list"]),
    ],
    "aux_free_bias_update": [
        ("sign-flipped", '''
def aux_free_bias_update(bias_E, indices_TK, rate):
    load = torch.bincount(indices_TK.flatten(), minlength=bias_E.numel()).float()
    return bias_E + rate * torch.sign(load - load.mean())
''', ["flipped"]),
        ("no-minlength", '''
def aux_free_bias_update(bias_E, indices_TK, rate):
    load = torch.bincount(indices_TK.flatten()).float()
    return bias_E + rate * torch.sign(load.mean() - load)
''', ["minlength"]),
        ("proportional", '''
def aux_free_bias_update(bias_E, indices_TK, rate):
    load = torch.bincount(indices_TK.flatten(), minlength=len(bias_E)).float()
    return bias_E + rate * (load.mean() - load)
''', ["SIGN"]),
        ("moves-at-the-mean", '''
def aux_free_bias_update(bias_E, indices_TK, rate):
    load = torch.bincount(indices_TK.flatten(), minlength=len(bias_E)).float()
    return bias_E + torch.where(load < load.mean(), rate, -rate)
''', ["exactly the mean"]),
        ("in-place", '''
def aux_free_bias_update(bias_E, indices_TK, rate):
    load = torch.bincount(indices_TK.flatten(), minlength=len(bias_E)).float()
    bias_E += rate * torch.sign(load.mean() - load)
    return bias_E
''', ["in place"]),
    ],
}
