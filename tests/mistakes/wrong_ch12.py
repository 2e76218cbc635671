"""Chapter 12: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "send_counts": [
        ("true-division-in-view", '''
def send_counts(counts_E, world_size):
    return counts_E.view(world_size, len(counts_E) / world_size).sum(1)
''', ["E // N", "integer division"]),
        ("mean-times-e-in-float", '''
def send_counts(counts_E, world_size):
    e = counts_E.numel() / world_size
    return counts_E.reshape(world_size, -1).float().mean(1) * e
''', ["integers", "LongTensor"]),
        ("per-expert", '''
def send_counts(counts_E, world_size):
    return counts_E.clone()
''', ["per EXPERT", "per RANK"]),
        ("summed-over-ranks", '''
def send_counts(counts_E, world_size):
    return counts_E.reshape(world_size, -1).sum(0)
''', ["one entry per local expert", r"view\(N, E // N\)\.sum\(1\)"]),
        ("round-robin", '''
def send_counts(counts_E, world_size):
    out = torch.zeros(world_size, dtype=torch.long)
    for i, c in enumerate(counts_E.tolist()):
        out[i % world_size] += c
    return out
''', ["contiguous blocks", "round-robin"]),
        ("offsets", '''
def send_counts(counts_E, world_size):
    per_rank = counts_E.reshape(world_size, -1).sum(1)
    return torch.cumsum(per_rank, 0)
''', ["offsets", "SIZES"]),
        ("equal-share", '''
def send_counts(counts_E, world_size):
    total = int(counts_E.sum())
    return torch.tensor([total // world_size] * world_size)
''', ["ITS experts", "equal share"]),
    ],
    "sort_by_expert": [
        ("bincount-without-minlength", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    token = slot // idx_TK.shape[1]
    return x_TD[token] * scores_TK.flatten()[slot, None], token, flat.bincount()
''', ["minlength"]),
        ("scores-left-for-later", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    token = slot // idx_TK.shape[1]
    return x_TD[token], token, torch.bincount(flat, minlength=num_experts)
''', ["σ · x", "INPUT"]),
        ("score-indexed-by-token", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    token = slot // idx_TK.shape[1]
    return x_TD[token] * scores_TK.flatten()[token].unsqueeze(1), token, torch.bincount(flat, minlength=num_experts)
''', [r"scores\.flatten\(\)\[token\]", r"slot\[n\]"]),
        ("scores-in-token-order", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    token = slot // idx_TK.shape[1]
    return x_TD[token] * scores_TK.reshape(-1, 1), token, torch.bincount(flat, minlength=num_experts)
''', ["expert order"]),
        ("scattered-to-slot", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    K = idx_TK.shape[1]
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    rows = x_TD.repeat_interleave(K, dim=0) * scores_TK.reshape(-1, 1)
    out = torch.empty_like(rows)
    out[slot] = rows
    return out, slot // K, torch.bincount(flat, minlength=num_experts)
''', ["INVERSE permutation", r"rows\[slot\]"]),
        ("unstable-sort", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    _, slot = torch.sort(flat)
    token = slot // idx_TK.shape[1]
    return x_TD[token] * scores_TK.flatten()[slot][:, None], token, torch.bincount(flat, minlength=num_experts)
''', ["stable"]),
        ("token-is-slot-mod-k", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    rows = x_TD[slot // idx_TK.shape[1]] * scores_TK.flatten()[slot][:, None]
    return rows, slot % idx_TK.shape[1], torch.bincount(flat, minlength=num_experts)
''', ["slot // K"]),
        ("token-column-major", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.reshape(-1)
    slot = torch.argsort(flat, stable=True)
    token = slot % idx_TK.shape[0]
    return x_TD[token] * scores_TK.reshape(-1, 1)[slot], token, torch.bincount(flat, minlength=num_experts)
''', ["token by token", "slot // K", "column by column"]),
        ("slot-for-token", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    flat = idx_TK.flatten()
    slot = flat.argsort(stable=True)
    rows = x_TD[slot // idx_TK.shape[1]] * scores_TK.flatten()[slot][:, None]
    return rows, slot, torch.bincount(flat, minlength=num_experts)
''', ["not the flat slot"]),
    ],
    "expert_major_order": [
        ("sorted-labels", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    labels = torch.arange(e).repeat(N).repeat_interleave(recv_counts_Ne.flatten())
    return torch.sort(labels, stable=True).values
''', ["INDICES"]),
        ("labelled-by-source", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    source = torch.arange(N).repeat_interleave(recv_counts_Ne.sum(1))
    return torch.argsort(source, stable=True)
''', ["source-major", "EXPERT"]),
        ("arrival-order", '''
def expert_major_order(recv_counts_Ne):
    return torch.arange(int(recv_counts_Ne.sum()))
''', ["arrival order"]),
        ("inverse-permutation", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    counts = recv_counts_Ne.tolist()
    starts = [0] * e  # where each expert's rows begin in the expert-major buffer
    for j in range(1, e):
        starts[j] = starts[j - 1] + sum(counts[s][j - 1] for s in range(N))
    dest = []
    for s in range(N):
        for j in range(e):
            for _ in range(counts[s][j]):
                dest.append(starts[j])
                starts[j] += 1
    return torch.tensor(dest, dtype=torch.long)
''', ["inverse permutation"]),
        ("unstable-sort", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    labels = torch.arange(e).repeat(N).repeat_interleave(recv_counts_Ne.flatten())
    return torch.sort(labels).indices
''', ["stable"]),
    ],
    "combine": [
        ("length-from-token-ids", '''
def combine(y_ND, token_N, num_tokens):
    out = y_ND.new_zeros(int(token_N.max()) + 1, y_ND.shape[1])
    return out.index_add_(0, token_N, y_ND)
''', ["needs num_tokens rows"]),
        ("loop-to-the-largest-token", '''
def combine(y_ND, token_N, num_tokens):
    out = y_ND.new_zeros(num_tokens, y_ND.shape[1])
    for t in range(int(token_N.max()) + 1):
        out[t] = y_ND[token_N == t].sum(0)
    return out
''', ["rank has no rows", "empty"]),
        ("float32-buffer", '''
def combine(y_ND, token_N, num_tokens):
    out = torch.zeros(num_tokens, y_ND.shape[1])
    out.index_add_(0, token_N, y_ND)
    return out
''', ["y's dtype"]),
        ("float32-result", '''
def combine(y_ND, token_N, num_tokens):
    out = torch.zeros(num_tokens, y_ND.shape[1])
    return out.index_add_(0, token_N, y_ND.float())
''', ["y's dtype"]),
        ("assignment", '''
def combine(y_ND, token_N, num_tokens):
    out = y_ND.new_zeros(num_tokens, y_ND.shape[1])
    out[token_N] = y_ND
    return out
''', ["assigned", "index_add_"]),
        ("index-copy", '''
def combine(y_ND, token_N, num_tokens):
    return y_ND.new_zeros(num_tokens, y_ND.shape[1]).index_copy(0, token_N, y_ND)
''', ["assigned", "scatter-add"]),
        ("mean-of-rows", '''
def combine(y_ND, token_N, num_tokens):
    out = y_ND.new_zeros(num_tokens, y_ND.shape[1]).index_add_(0, token_N, y_ND)
    n = torch.bincount(token_N, minlength=num_tokens).clamp(min=1)
    return out / n.unsqueeze(1)
''', ["SUM", "not their mean"]),
        ("rows-in-token-order", '''
def combine(y_ND, token_N, num_tokens):
    K = y_ND.shape[0] // num_tokens
    return y_ND.view(num_tokens, K, -1).sum(dim=1)
''', ["expert order, not token order"]),
    ],
    "rank_weight_bytes": [
        ("shared-expert-split", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F = config.hidden_size, config.intermediate_size
    experts = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    other = config.num_parameters() - experts
    return round(experts / world_size * expert_bytes + other * other_bytes)
''', ["shared expert is replicated"]),
        ("routed-replicated", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F = config.hidden_size, config.intermediate_size
    experts = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    return round(experts * expert_bytes + (config.num_parameters() - experts) * other_bytes)
''', ["routed experts are split", "E / N"]),
        ("whole-model-split", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F = config.hidden_size, config.intermediate_size
    experts = len(config.moe_layers) * (config.num_local_experts + 1) * 3 * D * F
    total = experts * expert_bytes + (config.num_parameters() - experts) * other_bytes
    return round(total / world_size)
''', ["replicated, whole on every rank"]),
        ("every-layer-moe", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F, E = config.hidden_size, config.intermediate_size, config.num_local_experts
    L = config.num_hidden_layers
    routed, shared = L * E * 3 * D * F, L * 3 * D * F
    other = config.num_parameters() - routed - shared
    return round((routed // world_size + shared) * expert_bytes + other * other_bytes)
''', ["moe_layers", "dense layers"]),
        ("shared-at-other-bytes", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F = config.hidden_size, config.intermediate_size
    routed = len(config.moe_layers) * config.num_local_experts * 3 * D * F
    return round(routed // world_size * expert_bytes + (config.num_parameters() - routed) * other_bytes)
''', ["shared expert is an expert", "expert_bytes"]),
        ("truncated", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    D, F = config.hidden_size, config.intermediate_size
    one = 3 * D * F
    n = len(config.moe_layers)
    per_rank = n * (config.num_local_experts // world_size) * one + n * one
    return int(per_rank * expert_bytes + (config.num_parameters() - n * (config.num_local_experts + 1) * one)
               * other_bytes)
''', [r"round\(\)", "truncates"]),
    ],
}

RIGHT = {
    "send_counts": [("loop-over-ranks", '''
def send_counts(counts_E, world_size):
    e = counts_E.numel() // world_size
    return torch.stack([counts_E[r * e:(r + 1) * e].sum() for r in range(world_size)])
'''), ("scatter-by-owner", '''
def send_counts(counts_E, world_size):
    owner = torch.arange(counts_E.numel()) // (counts_E.numel() // world_size)
    return torch.zeros(world_size, dtype=torch.long).index_add_(0, owner, counts_E)
''')],
    "sort_by_expert": [("loops", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    T, K = idx_TK.shape
    rows, tokens, counts = [], [], []
    for e in range(num_experts):
        n = 0
        for t in range(T):
            for j in range(K):
                if idx_TK[t, j] == e:
                    rows.append(scores_TK[t, j] * x_TD[t])
                    tokens.append(t)
                    n += 1
        counts.append(n)
    x = torch.stack(rows) if rows else x_TD.new_zeros(0, x_TD.shape[1])
    return x, torch.tensor(tokens, dtype=torch.long), torch.tensor(counts, dtype=torch.long)
'''), ("stable-sort-values", '''
def sort_by_expert(x_TD, idx_TK, scores_TK, num_experts):
    K = idx_TK.shape[1]
    flat = idx_TK.reshape(-1)
    _, order = torch.sort(flat, stable=True)
    rows = (x_TD.unsqueeze(1) * scores_TK.unsqueeze(-1)).reshape(-1, x_TD.shape[1])  # σ · x per (token, slot)
    counts = torch.zeros(num_experts, dtype=torch.long).scatter_add_(0, flat, torch.ones_like(flat))
    return rows[order], torch.div(order, K, rounding_mode="floor"), counts
''')],
    "expert_major_order": [("offsets-by-hand", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    start = torch.cumsum(recv_counts_Ne.reshape(-1), 0) - recv_counts_Ne.reshape(-1)  # where block (s, j) begins
    start = start.view(N, e)
    parts = [torch.arange(int(start[s, j]), int(start[s, j] + recv_counts_Ne[s, j]))
             for j in range(e) for s in range(N)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
'''), ("sort-key-expert-then-arrival", '''
def expert_major_order(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    labels = torch.arange(e).repeat(N).repeat_interleave(recv_counts_Ne.flatten())
    key = labels * (labels.numel() + 1) + torch.arange(labels.numel())  # unique keys: any sort is stable
    return torch.argsort(key)
''')],
    "combine": [("scatter-add", '''
def combine(y_ND, token_N, num_tokens):
    index = token_N.unsqueeze(1).expand(-1, y_ND.shape[1])
    return torch.zeros(num_tokens, y_ND.shape[1], dtype=y_ND.dtype).scatter_add(0, index, y_ND)
'''), ("loop", '''
def combine(y_ND, token_N, num_tokens):
    out = torch.zeros(num_tokens, y_ND.shape[1], dtype=y_ND.dtype)
    for n, t in enumerate(token_N.tolist()):
        out[t] += y_ND[n]
    return out
''')],
    "rank_weight_bytes": [("per-layer-loop", '''
def rank_weight_bytes(config, world_size, expert_bytes=2.0, other_bytes=2.0):
    expert = 3 * config.hidden_size * config.intermediate_size
    held, split_off = 0, 0
    for _ in config.moe_layers:
        held += (config.num_local_experts // world_size + 1) * expert  # my routed experts + the shared one
        split_off += (config.num_local_experts + 1) * expert
    return round(held * expert_bytes + (config.num_parameters() - split_off) * other_bytes)
''')],
}
