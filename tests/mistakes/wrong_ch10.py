"""Chapter 10: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "completion_batch": [
        ("not-shifted-at-all", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids, labels = [], []
    for p, c in zip(prompts, completions):
        pad = L - len(p) - len(c)
        ids.append(p + c + [pad_id] * pad)
        labels.append([-100] * len(p) + c + [-100] * pad)
    return torch.tensor(ids), torch.tensor(labels)
''', ["full-length", "\\[:, :-1\\]"]),
        ("prompt-scored", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids, labels = [], []
    for p, c in zip(prompts, completions):
        pad = L - len(p) - len(c)
        ids.append(p + c + [pad_id] * pad)
        labels.append(p + c + [-100] * pad)
    ids, labels = torch.tensor(ids), torch.tensor(labels)
    return ids[:, :-1], labels[:, 1:]
''', ["prompt"]),
        ("everything-scored", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    rows = torch.tensor([p + c + [pad_id] * (L - len(p) - len(c)) for p, c in zip(prompts, completions)])
    return rows[:, :-1], rows[:, 1:].clone()
''', ["whole shifted rows"]),
        ("labels-not-shifted", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), L), pad_id)
    labels = torch.full((len(prompts), L), -100)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, :len(p) + len(c)] = torch.tensor(p + c)
        labels[b, len(p):len(p) + len(c)] = torch.tensor(c)
    return ids[:, :-1], labels[:, :-1]
''', ["not shifted"]),
        ("shifted-backwards", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), L), pad_id)
    labels = torch.full((len(prompts), L), -100)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, :len(p) + len(c)] = torch.tensor(p + c)
        labels[b, len(p):len(p) + len(c)] = torch.tensor(c)
    return ids[:, 1:], labels[:, :-1]
''', ["wrong way"]),
        ("mask-after-shift", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), L), pad_id)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, :len(p) + len(c)] = torch.tensor(p + c)
    inputs, labels = ids[:, :-1], ids[:, 1:].clone()
    for b, (p, c) in enumerate(zip(prompts, completions)):
        labels[b, :len(p)] = -100
        labels[b, len(p) + len(c):] = -100
    return inputs, labels
''', ["input position"]),
        ("left-padded", '''
def completion_batch(prompts, completions, pad_id=0):
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids, labels = [], []
    for p, c in zip(prompts, completions):
        pad = L - len(p) - len(c)
        ids.append([pad_id] * pad + p + c)
        labels.append([-100] * (pad + len(p)) + c)
    ids, labels = torch.tensor(ids), torch.tensor(labels)
    return ids[:, :-1], labels[:, 1:]
''', ["right"]),
    ],
    "sequence_logprobs": [
        ("gather-at-minus-100", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    lp = torch.gather(logp, 2, labels_BT.unsqueeze(2)).squeeze(2)
    return lp.masked_fill(labels_BT == -100, 0.0).sum(1)
''', ["clamp"]),
        ("per-token", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    lp = logp.gather(-1, labels_BT.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp * (labels_BT != -100)
''', ["one log-prob per sequence"]),
        ("mean-over-counted", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    keep = labels_BT != -100
    lp = logp.gather(-1, labels_BT.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return lp.sum(-1) / keep.sum(-1)
''', ["mean", "SUM"]),
        ("mean-over-positions", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    keep = labels_BT != -100
    lp = logp.gather(-1, labels_BT.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return lp.mean(-1)
''', ["mean", "SUM"]),
        ("cross-entropy", '''
def sequence_logprobs(logits_BTV, labels_BT):
    B, T, V = logits_BTV.shape
    nll = F.cross_entropy(logits_BTV.float().reshape(B * T, V), labels_BT.reshape(B * T), reduction="none")
    return nll.view(B, T).sum(-1)
''', ["sign", "cross-entropy"]),
        ("not-zeroed", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    safe = torch.where(labels_BT == -100, torch.zeros_like(labels_BT), labels_BT)
    return logp.gather(-1, safe[..., None])[..., 0].sum(-1)
''', ["-100 positions were counted"]),
        ("probabilities", '''
def sequence_logprobs(logits_BTV, labels_BT):
    probs = torch.softmax(logits_BTV.float(), dim=-1)
    keep = labels_BT != -100
    p = probs.gather(-1, labels_BT.clamp(min=0)[..., None])[..., 0]
    return torch.where(keep, p, 0.0).sum(-1)
''', ["probabilities"]),
        ("softmax-over-positions", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = torch.log_softmax(logits_BTV.float(), dim=1)
    keep = labels_BT != -100
    lp = logp.gather(2, labels_BT.clamp(min=0)[..., None])[..., 0]
    return (lp * keep).sum(1)
''', ["last dim"]),
        ("bfloat16", '''
def sequence_logprobs(logits_BTV, labels_BT):
    logp = logits_BTV.log_softmax(-1)
    keep = labels_BT != -100
    lp = logp.gather(-1, labels_BT.clamp(min=0)[..., None])[..., 0]
    return (lp * keep).sum(-1).float()
''', ["float32"]),
    ],
    "dpo_loss": [
        ("loss-only", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    logits = beta * ((pc_P - rc_P) - (pr_P - rr_P))
    return -F.logsigmoid(logits).mean()
''', ["three things"]),
        ("loss-from-detached-rewards", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = (beta * (pc_P - rc_P)).detach()
    rejected = (beta * (pr_P - rr_P)).detach()
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected
''', ["no gradient"]),
        ("rewards-not-detached", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * (pc_P - rc_P)
    rejected = beta * (pr_P - rr_P)
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected
''', ["detach"]),
        ("sign-flipped", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * (pc_P - rc_P)
    rejected = beta * (pr_P - rr_P)
    loss = -F.logsigmoid(rejected - chosen).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["sign"]),
        ("no-minus", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * (pc_P - rc_P)
    rejected = beta * (pr_P - rr_P)
    loss = torch.log(torch.sigmoid(chosen - rejected)).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["minus"]),
        ("reference-minus-policy", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * (rc_P - pc_P)
    rejected = beta * (rr_P - pr_P)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["policy − reference"]),
        ("no-beta", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = pc_P - rc_P
    rejected = pr_P - rr_P
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["β out"]),
        ("beta-only-in-loss", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = pc_P - rc_P
    rejected = pr_P - rr_P
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["rewards lack β"]),
        ("policy-only", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * pc_P
    rejected = beta * pr_P
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()
''', ["policy alone"]),
        ("sum", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    chosen = beta * (pc_P - rc_P)
    rejected = beta * (pr_P - rr_P)
    loss = -F.logsigmoid(chosen - rejected).sum()
    return loss, chosen.detach(), rejected.detach()
''', ["sum", "MEAN"]),
    ],
    "pick_pair": [
        ("none-pair", '''
def pick_pair(correct, formatted):
    scores = [2 * c + f for c, f in zip(correct, formatted)]
    chosen = rejected = None
    if 3 in scores and min(scores) < 3:
        chosen = scores.index(3)
        rejected = scores.index(max(s for s in scores if s < 3))
    return chosen, rejected
''', ["None itself"]),
        ("format-first", '''
def pick_pair(correct, formatted):
    scores = [int(c) + 2 * int(f) for c, f in zip(correct, formatted)]
    if 3 not in scores or all(s == 3 for s in scores):
        return None
    return scores.index(3), scores.index(max(s for s in scores if s != 3))
''', ["correctness weighs more"]),
        ("best-even-if-not-ideal", '''
def pick_pair(correct, formatted):
    scores = [2 * c + f for c, f in zip(correct, formatted)]
    best = max(scores)
    lower = [s for s in scores if s < best]
    if not lower:
        return None
    return scores.index(best), scores.index(max(lower))
''', ["ideal"]),
        ("correct-against-wrong", '''
def pick_pair(correct, formatted):
    if all(correct) or not any(correct):
        return None
    return correct.index(True), correct.index(False)
''', ["correct AND formatted"]),
        ("worst-rejected", '''
def pick_pair(correct, formatted):
    scores = [2 * c + f for c, f in zip(correct, formatted)]
    if 3 not in scores or min(scores) == 3:
        return None
    return scores.index(3), scores.index(min(scores))
''', ["CLOSEST"]),
        ("first-below", '''
def pick_pair(correct, formatted):
    scores = [2 * c + f for c, f in zip(correct, formatted)]
    if 3 not in scores:
        return None
    for i, s in enumerate(scores):
        if s < 3:
            return scores.index(3), i
    return None
''', ["highest score below 3"]),
        ("last-of-each", '''
def pick_pair(correct, formatted):
    chosen, rejected, best_below = None, None, -1
    for i, (c, f) in enumerate(zip(correct, formatted)):
        s = 2 * c + f
        if s == 3:
            chosen = i
        elif s >= best_below:
            rejected, best_below = i, s
    if chosen is None or rejected is None:
        return None
    return chosen, rejected
''', ["FIRST"]),
    ],
}

RIGHT = {
    "completion_batch": [("pad-sequence", '''
def completion_batch(prompts, completions, pad_id=0):
    from torch.nn.utils.rnn import pad_sequence
    rows = [torch.tensor(p + c, dtype=torch.long) for p, c in zip(prompts, completions)]
    labs = [torch.tensor([-100] * len(p) + c, dtype=torch.long) for p, c in zip(prompts, completions)]
    ids = pad_sequence(rows, batch_first=True, padding_value=pad_id)
    lab = pad_sequence(labs, batch_first=True, padding_value=-100)
    return ids[:, :-1], lab[:, 1:]
''')],
    "sequence_logprobs": [("logsumexp", '''
def sequence_logprobs(logits_BTV, labels_BT):
    x = logits_BTV.to(torch.float32)
    keep = labels_BT != -100
    picked = x.gather(-1, labels_BT.masked_fill(~keep, 0).unsqueeze(-1)).squeeze(-1)
    lp = picked - torch.logsumexp(x, dim=-1)
    return torch.where(keep, lp, torch.zeros_like(lp)).sum(dim=-1)
''')],
    "dpo_loss": [("softplus", '''
def dpo_loss(pc_P, pr_P, rc_P, rr_P, beta):
    margin = beta * ((pc_P.float() - pr_P.float()) - (rc_P.float() - rr_P.float()))
    loss = F.softplus(-margin).mean()
    with torch.no_grad():
        chosen, rejected = beta * (pc_P - rc_P), beta * (pr_P - rr_P)
    return loss, chosen.float(), rejected.float()
''')],
    "pick_pair": [("sorted-loop", '''
def pick_pair(correct, formatted):
    ideal = [i for i in range(len(correct)) if correct[i] and formatted[i]]
    rest = [i for i in range(len(correct)) if not (correct[i] and formatted[i])]
    if not ideal or not rest:
        return None
    rest.sort(key=lambda i: -(2 * correct[i] + formatted[i]))  # stable: ties keep their order
    return ideal[0], rest[0]
''')],
}
