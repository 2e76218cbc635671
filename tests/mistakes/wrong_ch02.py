"""Chapter 02: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "route": [
        ("softmax-over-experts", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.t()
    probs = F.softmax(logits, dim=-1)
    scores, idx = torch.topk(probs, top_k, dim=-1)
    return logits, idx, scores
''', ["softmax", "sigmoid"]),
        ("softmax-over-top-k", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.t()
    top, idx = logits.topk(top_k, dim=-1)
    return logits, idx, torch.softmax(top.float(), dim=-1).to(x_TD.dtype)
''', ["sum to 1", "renormalis"]),
        ("sigmoid-renormalised", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.t()
    top, idx = logits.topk(top_k, dim=-1)
    s = torch.sigmoid(top.float())
    return logits, idx, (s / s.sum(dim=-1, keepdim=True)).to(x_TD.dtype)
''', ["sum to 1"]),
        ("ranks-bf16-sigmoids", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.T
    probs = logits.sigmoid()
    scores, idx = probs.topk(top_k, dim=-1)
    return logits, idx, scores
''', ["bfloat16", "raw"]),
        ("scores-left-in-float32", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.t()
    top, idx = torch.topk(logits, top_k)
    return logits, idx, torch.sigmoid(top.float())
''', ["cast", "dtype"]),
        ("every-expert-scored", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED.t()
    idx = logits.topk(top_k, dim=-1).indices
    return logits, idx, torch.sigmoid(logits.float()).to(x_TD.dtype)
''', ["chosen experts only"]),
        ("weight-not-transposed", '''
def route(x_TD, w_router_ED, top_k):
    logits = x_TD @ w_router_ED
    top, idx = logits.topk(top_k, dim=-1)
    return logits, idx, torch.sigmoid(top.float()).to(x_TD.dtype)
''', [r"\[E, D\]", r"W\.t\(\)"]),
    ],
    "dispatch": [
        ("unstable-sort", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.flatten()
    _, slot_N = torch.sort(flat)
    return slot_N // idx_TK.shape[1], slot_N, torch.bincount(flat, minlength=num_experts)
''', ["stable"]),
        ("bincount-without-minlength", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.flatten()
    slot_N = flat.argsort(stable=True)
    return slot_N // idx_TK.shape[1], slot_N, flat.bincount()
''', ["minlength"]),
        ("unique-counts", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.reshape(-1)
    slot_N = torch.argsort(flat, stable=True)
    _, counts = torch.unique(flat, return_counts=True)
    return slot_N // idx_TK.shape[1], slot_N, counts
''', ["minlength"]),
        ("token-is-slot-mod-k", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.reshape(-1)
    slot_N = torch.argsort(flat, stable=True)
    return slot_N % idx_TK.shape[1], slot_N, torch.bincount(flat, minlength=num_experts)
''', ["slot // K"]),
        ("token-is-slot", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.reshape(-1)
    order = torch.argsort(flat, stable=True)
    return order, order, torch.bincount(flat, minlength=num_experts)
''', ["slot // K"]),
        ("outputs-swapped", '''
def dispatch(idx_TK, num_experts):
    flat = idx_TK.reshape(-1)
    slot_N = torch.argsort(flat, stable=True)
    token_N = slot_N // idx_TK.shape[1]
    return slot_N, token_N, torch.bincount(flat, minlength=num_experts)
''', ["order is"]),
    ],
    "routed_experts": [
        ("score-on-output", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_proj_ED2F.shape[0]):
        tok, j = torch.where(idx_TK == e)
        if len(tok) == 0:
            continue
        gate, up = (x_TD[tok] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        y = (F.silu(gate) * up) @ down_proj_EFD[e]
        out.index_add_(0, tok, y * scores_TK[tok, j, None])
    return out
''', ["OUTPUT", "INPUT"]),
        ("no-score", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_proj_ED2F.shape[0]):
        tok, j = torch.where(idx_TK == e)
        gate, up = (x_TD[tok] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out.index_add_(0, tok, (F.silu(gate) * up) @ down_proj_EFD[e])
    return out
''', ["router score"]),
        ("sigmoid-again", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_proj_ED2F.shape[0]):
        tok, j = torch.where(idx_TK == e)
        h = x_TD[tok] * torch.sigmoid(scores_TK[tok, j]).unsqueeze(-1)
        gate, up = (h @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out.index_add_(0, tok, (F.silu(gate) * up) @ down_proj_EFD[e])
    return out
''', ["already"]),
        ("first-expert-only", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    best, s = idx_TK[:, 0], scores_TK[:, 0]
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_proj_ED2F.shape[0]):
        tok = (best == e).nonzero().flatten()
        gate, up = ((x_TD[tok] * s[tok, None]) @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out.index_add_(0, tok, (F.silu(gate) * up) @ down_proj_EFD[e])
    return out
''', ["first expert"]),
        ("score-looked-up-by-token", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    K, E = idx_TK.shape[1], gate_up_proj_ED2F.shape[0]
    flat = idx_TK.flatten()
    slot = torch.argsort(flat, stable=True)
    token = slot // K
    counts = torch.bincount(flat, minlength=E)
    xs = x_TD[token] * scores_TK.flatten()[token][:, None]
    out = torch.zeros_like(x_TD)
    start = 0
    for e in range(E):
        n = int(counts[e])
        gate, up = (xs[start:start + n] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out.index_add_(0, token[start:start + n], (F.silu(gate) * up) @ down_proj_EFD[e])
        start += n
    return out
''', [r"flatten\(\)\[token\]"]),
        ("scores-not-sorted", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    K, E = idx_TK.shape[1], gate_up_proj_ED2F.shape[0]
    flat = idx_TK.flatten()
    slot = torch.argsort(flat, stable=True)
    token = slot // K
    counts = torch.bincount(flat, minlength=E)
    xs = x_TD[token] * scores_TK.reshape(-1, 1)
    out = torch.zeros_like(x_TD)
    start = 0
    for e in range(E):
        n = int(counts[e])
        gate, up = (xs[start:start + n] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out.index_add_(0, token[start:start + n], (F.silu(gate) * up) @ down_proj_EFD[e])
        start += n
    return out
''', ["expert order"]),
        ("assigned-not-added", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    K, E = idx_TK.shape[1], gate_up_proj_ED2F.shape[0]
    flat = idx_TK.flatten()
    slot = torch.argsort(flat, stable=True)
    token = slot // K
    counts = torch.bincount(flat, minlength=E)
    xs = x_TD[token] * scores_TK.flatten()[slot][:, None]
    out = torch.zeros_like(x_TD)
    start = 0
    for e in range(E):
        rows = slice(start, start + int(counts[e]))
        gate, up = (xs[rows] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out[token[rows]] = (F.silu(gate) * up) @ down_proj_EFD[e]
        start += int(counts[e])
    return out
''', ["index_add_", "instead of adding"]),
        ("linear-layout", '''
def routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_proj_ED2F.shape[0]):
        tok, j = torch.where(idx_TK == e)
        h = x_TD[tok] * scores_TK[tok, j, None]
        gate, up = (h @ gate_up_proj_ED2F[e].T).chunk(2, dim=-1)
        out.index_add_(0, tok, (F.silu(gate) * up) @ down_proj_EFD[e].T)
    return out
''', ["no transpose"]),
    ],
    "dense_routed_experts": [
        ("tokens-first-stack", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, scores_TK)
    x_TED = score_TE[:, :, None] * x_TD[:, None, :]
    gate, up = torch.bmm(x_TED, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD).sum(1)
''', ["expert-first"]),
        ("linear-layout", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, scores_TK)
    x_ETD = score_TE.t().unsqueeze(-1) * x_TD
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F.transpose(1, 2)).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD.transpose(1, 2)).sum(0)
''', ["no transpose"]),
        ("no-sum", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, scores_TK)
    x_ETD = score_TE.t().unsqueeze(-1) * x_TD
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD)
''', ["dim 0"]),
        ("summed-over-tokens", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, scores_TK)
    x_ETD = score_TE.t().unsqueeze(-1) * x_TD
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD).sum(1)
''', ["dim 0"]),
        ("score-on-output", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, scores_TK)
    x_ETD = x_TD.expand(E, T, -1)
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    y_ETD = torch.bmm(F.silu(gate) * up, down_proj_EFD)
    return (score_TE.t().unsqueeze(-1) * y_ETD).sum(0)
''', ["OUTPUT"]),
        ("routing-mask-not-scores", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    routed_TE = torch.zeros(T, E).scatter(1, idx_TK, 1.0)
    x_ETD = routed_TE.t().unsqueeze(-1) * x_TD
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD).sum(0)
''', ["router score"]),
        ("sigmoid-again", '''
def dense_routed_experts(x_TD, idx_TK, scores_TK, gate_up_proj_ED2F, down_proj_EFD):
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E).scatter(1, idx_TK, torch.sigmoid(scores_TK))
    x_ETD = score_TE.t().unsqueeze(-1) * x_TD
    gate, up = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD).sum(0)
''', ["already"]),
    ],
}
