"""Chapter 08: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "chat_template": [
        ("llama3-tokens", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += f"<|start_header_id|>{role}<|end_header_id|>\\n\\n{m['content']}<|eot_id|>"
    if add_generation_prompt:
        out += "<|start_header_id|>assistant<|end_header_id|>\\n\\n"
    return out
''', ["Llama 3", "<\\|eot\\|>"]),
        ("no-begin-of-text", '''
def format_chat(messages, add_generation_prompt=True):
    parts = []
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        parts.append("<|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"] + "<|eot|>")
    if add_generation_prompt:
        parts.append("<|header_start|>assistant<|header_end|>\\n\\n")
    return "".join(parts)
''', ["begin_of_text"]),
        ("begin-of-text-per-message", '''
def format_chat(messages, add_generation_prompt=True):
    out = ""
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += "<|begin_of_text|><|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"] + "<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>\\n\\n"
    return out
''', ["once"]),
        ("one-newline", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += f"<|header_start|>{role}<|header_end|>\\n{m['content']}<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>\\n"
    return out
''', ["two newlines"]),
        ("no-newlines", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += "<|header_start|>" + role + "<|header_end|>" + m["content"] + "<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>"
    return out
''', ["two newlines"]),
        ("tool-role-kept", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        out += "<|header_start|>" + m["role"] + "<|header_end|>\\n\\n" + m["content"] + "<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>\\n\\n"
    return out
''', ["ipython"]),
        ("generation-prompt-without-blank-line", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = {"tool": "ipython"}.get(m["role"], m["role"])
        out += "<|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"] + "<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>"
    return out
''', ["open assistant header", "blank line"]),
        ("no-generation-prompt", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += "<|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"] + "<|eot|>"
    return out
''', ["add_generation_prompt=True", "open assistant header"]),
        ("generation-prompt-always", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages + [{"role": "assistant", "content": None}]:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += "<|header_start|>" + role + "<|header_end|>\\n\\n"
        if m["content"] is not None:
            out += m["content"] + "<|eot|>"
    return out
''', ["add_generation_prompt=False"]),
        ("eot-as-separator", '''
def format_chat(messages, add_generation_prompt=True):
    turns = []
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        turns.append("<|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"])
    out = "<|begin_of_text|>" + "<|eot|>".join(turns)
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>\\n\\n"
    return out
''', ["last one too"]),
        ("content-stripped", '''
def format_chat(messages, add_generation_prompt=True):
    out = "<|begin_of_text|>"
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]
        out += "<|header_start|>" + role + "<|header_end|>\\n\\n" + m["content"].strip() + "<|eot|>"
    if add_generation_prompt:
        out += "<|header_start|>assistant<|header_end|>\\n\\n"
    return out
''', ["strip"]),
    ],
    "assistant_labels": [
        ("not-shifted", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T.clone()
    labels[~is_assistant_T] = -100
    return ids_T, labels
''', ["not shifted"]),
        ("labels-at-own-position", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T.masked_fill(~is_assistant_T, -100)
    return ids_T[:-1], labels[:-1]
''', ["token at t itself", "t\\+1"]),
        ("shifted-backwards", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T.masked_fill(~is_assistant_T, -100)
    return ids_T[1:], labels[:len(labels) - 1]
''', ["wrong way"]),
        ("loss-on-prompt", '''
def assistant_labels(ids_T, is_assistant_T):
    return ids_T[:-1].clone(), ids_T[1:].clone()
''', ["every token", "prompt"]),
        ("mask-before-shift-wrong", '''
def assistant_labels(ids_T, is_assistant_T):
    inputs, targets = ids_T[:-1], ids_T[1:].clone()
    targets[~is_assistant_T[:-1]] = -100
    return inputs, targets
''', ["input position", "is_assistant\\[1:\\]"]),
        ("mask-inverted", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T.masked_fill(is_assistant_T, -100)
    return ids_T[:-1], labels[1:]
''', ["inverted"]),
        ("zero-not-minus-100", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T * is_assistant_T.long()
    return ids_T[:-1], labels[1:]
''', ["-100"]),
    ],
    "masked_cross_entropy": [
        ("gather-at-minus-100", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    logp = logits_BTV.float().log_softmax(-1)
    lp = logp.gather(-1, labels_BT.unsqueeze(-1)).squeeze(-1)
    keep = labels_BT != -100
    return -(lp * keep).sum() / keep.sum()
''', ["-100"]),
        ("mean-per-row", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    losses = []
    for b in range(logits_BTV.shape[0]):
        losses.append(F.cross_entropy(logits_BTV[b].float(), labels_BT[b], ignore_index=-100))
    return torch.stack(losses).mean()
''', ["each row"]),
        ("divide-by-all-positions", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    nll = F.cross_entropy(logits_BTV.float().flatten(0, 1), labels_BT.flatten(), ignore_index=-100,
                          reduction="none")
    return nll.mean()
''', ["every position"]),
        ("sum", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    return F.cross_entropy(logits_BTV.float().flatten(0, 1), labels_BT.flatten(), reduction="sum")
''', ["MEAN"]),
        ("log-prob-not-negated", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    keep = labels_BT != -100
    logp = torch.log_softmax(logits_BTV[keep].float(), dim=-1)
    return logp[torch.arange(len(logp)), labels_BT[keep]].mean()
''', ["sign"]),
        ("shifted-again", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    logits = logits_BTV[:, :-1].float()
    labels = labels_BT[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
''', ["already shifted"]),
        ("bfloat16-log-softmax", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    keep = labels_BT != -100
    logp = logits_BTV[keep].log_softmax(-1)
    return -logp.gather(1, labels_BT[keep][:, None]).float().mean()
''', ["float32"]),
        ("bfloat16-cross-entropy", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    V = logits_BTV.shape[-1]
    return F.cross_entropy(logits_BTV.view(-1, V), labels_BT.view(-1), ignore_index=-100)
''', ["float32"]),
    ],
    "prune_easy": [
        ("tensor-returned", '''
def prune_easy(scores_N, keep_fraction):
    k = max(1, round(keep_fraction * len(scores_N)))
    return torch.sort(torch.topk(scores_N, k).indices).values
''', ["list"]),
        ("easiest-kept", '''
def prune_easy(scores_N, keep_fraction):
    k = max(1, round(keep_fraction * len(scores_N)))
    order = torch.argsort(scores_N)
    return sorted(order[:k].tolist())
''', ["EASIEST"]),
        ("zero-kept", '''
def prune_easy(scores_N, keep_fraction):
    k = round(keep_fraction * len(scores_N))
    order = scores_N.argsort(descending=True)
    return sorted(order[:k].tolist())
''', ["at least one"]),
        ("int-truncates", '''
def prune_easy(scores_N, keep_fraction):
    k = max(1, int(len(scores_N) * keep_fraction))
    order = scores_N.argsort(descending=True)
    return sorted(order[:k].tolist())
''', ["int\\(\\)", "round"]),
        ("ceil", '''
def prune_easy(scores_N, keep_fraction):
    import math
    k = math.ceil(len(scores_N) * keep_fraction)
    return sorted(i for i in range(len(scores_N)) if (scores_N > scores_N[i]).sum() < k)
''', ["ceil"]),
        ("removed-fraction", '''
def prune_easy(scores_N, keep_fraction):
    n_drop = round(keep_fraction * len(scores_N))
    order = scores_N.argsort()
    return sorted(order[n_drop:].tolist()) or [int(order[-1])]
''', ["KEEP"]),
        ("topk-order", '''
def prune_easy(scores_N, keep_fraction):
    k = max(1, round(keep_fraction * len(scores_N)))
    return [int(i) for i in scores_N.topk(k).indices]
''', ["sorted ascending"]),
    ],
}

RIGHT = {
    "chat_template": [("join-and-dict", '''
def format_chat(messages, add_generation_prompt=True):
    names = {"tool": "ipython"}
    turns = [f"<|header_start|>{names.get(m['role'], m['role'])}<|header_end|>\\n\\n{m['content']}<|eot|>"
             for m in messages]
    tail = ["<|header_start|>assistant<|header_end|>\\n\\n"] if add_generation_prompt else []
    return "<|begin_of_text|>" + "".join(turns + tail)
''')],
    "assistant_labels": [("clone-and-assign", '''
def assistant_labels(ids_T, is_assistant_T):
    labels = ids_T[1:].clone()
    labels[~is_assistant_T[1:]] = -100
    return ids_T[:-1].clone(), labels
''')],
    "masked_cross_entropy": [("F.cross_entropy", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    return F.cross_entropy(logits_BTV.float().flatten(0, 1), labels_BT.flatten(), ignore_index=-100)
'''), ("masked-sum-over-count", '''
def masked_cross_entropy(logits_BTV, labels_BT):
    keep = labels_BT != -100
    x = logits_BTV.to(torch.float32)
    nll = torch.logsumexp(x, -1) - x.gather(-1, labels_BT.clamp(min=0)[..., None])[..., 0]
    return (nll * keep).sum() / keep.sum()
''')],
    "prune_easy": [("argsort-descending", '''
def prune_easy(scores_N, keep_fraction):
    n = len(scores_N)
    k = max(1, round(n * keep_fraction))
    hardest = scores_N.argsort(descending=True)[:k]
    return sorted(int(i) for i in hardest)
''')],
}
