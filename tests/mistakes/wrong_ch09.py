"""Chapter 09: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "group_advantages": [
        ("nan-for-equal-groups", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)
    keep = r.max(1).values > r.min(1).values
    return adv * keep[:, None], keep
''', ["NaN"]),
        ("keep-per-sample", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)
    keep = r != r[:, :1]
    adv[~keep.any(-1)] = 0.0
    return adv, keep
''', ["one bool per group"]),
        ("keep-inverted", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)
    dropped = (r == r[:, :1]).all(-1)
    adv[dropped] = 0.0
    return adv, dropped
''', ["inverted"]),
        ("whole-batch", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean()) / (r.std() + eps)
    keep = (r.max(-1).values - r.min(-1).values) > 0
    adv[~keep] = 0
    return adv, keep
''', ["whole batch", "per group"]),
        ("over-prompts", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean(0)) / (r.std(0) + eps)
    keep = (r != r[:, :1]).any(-1)
    return torch.where(keep[:, None], adv, 0.0), keep
''', ["dim 0"]),
        ("no-std", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = r - r.mean(dim=-1, keepdim=True)
    keep = (r != r[:, :1]).any(dim=-1)
    return adv * keep[:, None], keep
''', ["std"]),
        ("biased-std", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    mean = r.mean(-1, keepdim=True)
    std = ((r - mean) ** 2).mean(-1, keepdim=True).sqrt()
    keep = (r != r[:, :1]).any(-1)
    return torch.where(keep[:, None], (r - mean) / (std + eps), 0.0), keep
''', ["biased"]),
        ("no-eps", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    keep = (r != r[:, :1]).any(-1)
    adv = torch.zeros_like(r)
    adv[keep] = (r[keep] - r[keep].mean(-1, keepdim=True)) / r[keep].std(-1, keepdim=True)
    return adv, keep
''', ["eps"]),
        ("keep-for-binary-rewards-only", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    G = r.shape[1]
    wins = r.sum(-1)
    keep = (wins > 0) & (wins < G)
    adv = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)
    return torch.where(keep[:, None], adv, torch.zeros_like(adv)), keep
''', ["all equal", "whatever the value"]),
        ("keep-from-float-std", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    centred = r - r.mean(-1, keepdim=True)
    std = (centred.pow(2).sum(-1, keepdim=True) / (r.shape[1] - 1)).sqrt()
    keep = std[:, 0] > 0
    adv = torch.where(keep[:, None], centred / (std + eps), torch.zeros_like(r))
    return adv, keep
''', ["all equal"]),
        ("not-zeroed", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.float()
    adv = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)
    keep = (r != r[:, :1]).any(-1)
    return adv, keep
''', ["exactly 0"]),
    ],
    "clipped_policy_loss": [
        ("adv-not-broadcast", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = (logp_new_BT - logp_old_BT).exp()
    obj = torch.min(ratio * adv_B, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv_B)
    return -(obj * mask_BT).sum() / mask_BT.sum()
''', ["adv\\[:, None\\]"]),
        ("ratio-of-log-probs", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = logp_new_BT.float() / logp_old_BT.float()
    a = adv_B.float().unsqueeze(1)
    obj = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return -obj[mask_BT].mean()
''', ["exp", "log-probabilities"]),
        ("log-ratio-as-ratio", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = logp_new_BT.float() - logp_old_BT.float()
    a = adv_B.float().unsqueeze(1)
    obj = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return -obj[mask_BT].mean()
''', ["LOG of the ratio"]),
        ("ratio-upside-down", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_old_BT.float()) / torch.exp(logp_new_BT.float())
    a = adv_B.float()[:, None]
    obj = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return -obj[mask_BT].mean()
''', ["upside down"]),
        ("max", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float()[:, None]
    obj = torch.max(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return -obj[mask_BT].mean()
''', ["max", "MIN"]),
        ("sign-flipped", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float()[:, None]
    obj = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return obj[mask_BT].mean()
''', ["sign"]),
        ("no-clip", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    return -(ratio * adv_B.float()[:, None])[mask_BT].mean()
''', ["no clipping"]),
        ("clipped-term-only", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float()).clamp(1 - clip_eps, 1 + clip_eps)
    return -(ratio * adv_B.float()[:, None])[mask_BT].mean()
''', ["only the clipped"]),
        ("mean-per-sequence", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float()[:, None]
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a) * mask_BT
    return (loss.sum(1) / mask_BT.sum(1)).mean()
''', ["each sequence"]),
        ("divide-by-B-times-T", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float()[:, None]
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    return (loss * mask_BT).mean()
''', ["every position"]),
        ("mask-ignored", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float()[:, None]
    return -torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a).mean()
''', ["mask was ignored"]),
    ],
    "k3_kl": [
        ("mean", '''
def k3_kl(logp_BT, ref_logp_BT):
    d = ref_logp_BT.float() - logp_BT.float()
    return (d.exp() - d - 1).mean()
''', ["per token"]),
        ("policy-minus-reference", '''
def k3_kl(logp_BT, ref_logp_BT):
    log_ratio = logp_BT.float() - ref_logp_BT.float()
    return log_ratio.exp() - log_ratio - 1
''', ["other way", "reference minus policy"]),
        ("k1", '''
def k3_kl(logp_BT, ref_logp_BT):
    return logp_BT.float() - ref_logp_BT.float()
''', ["log-ratio", "k1"]),
        ("k2", '''
def k3_kl(logp_BT, ref_logp_BT):
    return (logp_BT.float() - ref_logp_BT.float()).pow(2) / 2
''', ["k2"]),
        ("no-minus-one", '''
def k3_kl(logp_BT, ref_logp_BT):
    d = ref_logp_BT.float() - logp_BT.float()
    return torch.exp(d) - d
''', ["− 1"]),
        ("in-bfloat16", '''
def k3_kl(logp_BT, ref_logp_BT):
    d = ref_logp_BT - logp_BT
    return (torch.exp(d) - d - 1).float()
''', ["float32"]),
    ],
    "curriculum_weights": [
        ("divide-by-zero", '''
def curriculum_weights(step, steps, start, end):
    f = step / (steps - 1)
    return [s + f * (e - s) for s, e in zip(start, end)]
''', ["max\\(1, steps − 1\\)"]),
        ("tensor", '''
def curriculum_weights(step, steps, start, end):
    f = step / max(1, steps - 1)
    return (1 - f) * torch.tensor(start) + f * torch.tensor(end)
''', ["list of floats"]),
        ("over-steps", '''
def curriculum_weights(step, steps, start, end):
    f = step / steps
    return [s + f * (e - s) for s, e in zip(start, end)]
''', ["never reaches 1"]),
        ("swapped", '''
def curriculum_weights(step, steps, start, end):
    f = step / max(1, steps - 1)
    return [f * s + (1 - f) * e for s, e in zip(start, end)]
''', ["swapped"]),
        ("integer-division", '''
def curriculum_weights(step, steps, start, end):
    f = step // max(1, steps - 1)
    return [float((1 - f) * s + f * e) for s, e in zip(start, end)]
''', ["integer division"]),
        ("one-step-ahead", '''
def curriculum_weights(step, steps, start, end):
    f = min(1.0, (step + 1) / steps)
    return [(1 - f) * s + f * e for s, e in zip(start, end)]
''', ["another fraction"]),
    ],
}

RIGHT = {
    "group_advantages": [("var-sqrt-and-loop", '''
def group_advantages(rewards_PG, eps=1e-4):
    r = rewards_PG.to(torch.float32)
    adv = torch.zeros_like(r)
    keep = torch.zeros(r.shape[0], dtype=torch.bool)
    for i in range(r.shape[0]):
        if len(set(r[i].tolist())) > 1:
            keep[i] = True
            adv[i] = (r[i] - r[i].mean()) / (r[i].var().sqrt() + eps)
    return adv, keep
''')],
    "clipped_policy_loss": [("masked-select-and-where", '''
def clipped_policy_loss(logp_new_BT, logp_old_BT, adv_B, mask_BT, clip_eps=0.2):
    ratio = torch.exp(logp_new_BT.float() - logp_old_BT.float())
    a = adv_B.float().unsqueeze(-1).expand_as(ratio)
    clipped = torch.where(a >= 0, torch.minimum(ratio, torch.tensor(1 + clip_eps)) * a,
                          torch.maximum(ratio, torch.tensor(1 - clip_eps)) * a)
    return -clipped[mask_BT].mean()
''')],
    "k3_kl": [("expm1", '''
def k3_kl(logp_BT, ref_logp_BT):
    d = ref_logp_BT.double() - logp_BT.double()
    return (torch.expm1(d) - d).float()
''')],
    "curriculum_weights": [("lerp", '''
def curriculum_weights(step, steps, start, end):
    f = step / max(1, steps - 1)
    return torch.lerp(torch.tensor(start, dtype=torch.float64), torch.tensor(end, dtype=torch.float64), f).tolist()
''')],
}
