"""Chapter 07: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "softmax_with_temperature": [
        ("no-max-shift", '''
def softmax_with_temperature(logits_NV, temperature):
    e = torch.exp(logits_NV.float() / temperature)
    return e / e.sum(dim=-1, keepdim=True)
''', ["NaN", "max"]),
        ("one-max-for-all-rows", '''
def softmax_with_temperature(logits_NV, temperature):
    z = logits_NV.float() / temperature
    e = (z - z.max()).exp()
    return e / e.sum(-1, keepdim=True)
''', ["underflowed", "ROW's max"]),
        ("dim-1", '''
def softmax_with_temperature(logits_NV, temperature):
    z = logits_NV.float() / temperature
    z = z - z.max(dim=1, keepdim=True).values
    return z.exp() / z.exp().sum(dim=1, keepdim=True)
''', ["must run over the last dim"]),
        ("stays-bfloat16", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV / temperature, dim=-1)
''', ["bfloat16", "float32"]),
        ("divides-in-bfloat16", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV / temperature, dim=-1, dtype=torch.float32)
''', ["divided by T in bfloat16"]),
        ("softmax-in-bfloat16", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV / temperature, dim=-1).float()
''', ["computed in bfloat16"]),
        ("times-temperature", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV.float() * temperature, dim=-1)
''', ["multiplied", "divide"]),
        ("temperature-after-softmax", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV.float(), dim=-1) / temperature
''', ["before the softmax"]),
    ],
    "forward_kl": [
        ("log-of-softmax", '''
def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    p = torch.softmax(teacher_logits_NV.float() / temperature, -1)
    q = torch.softmax(student_logits_NV.float() / temperature, -1)
    return (p * (torch.log(p) - torch.log(q))).sum(-1)
''', ["NaN", "log_softmax"]),
        ("batchmean", '''
import torch.nn.functional as F

def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logq = F.log_softmax(student_logits_NV / temperature, dim=-1)
    p = F.softmax(teacher_logits_NV / temperature, dim=-1)
    return F.kl_div(logq, p, reduction="batchmean")
''', ["per position", r"\[N\]"]),
        ("reverse-kl", '''
import torch.nn.functional as F

def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logp = F.log_softmax(teacher_logits_NV / temperature, dim=-1)
    logq = F.log_softmax(student_logits_NV / temperature, dim=-1)
    return F.kl_div(logp, logq, log_target=True, reduction="none").sum(-1)
''', ["reverse", "TEACHER"]),
        ("no-temperature", '''
def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logp = teacher_logits_NV.float().log_softmax(-1)
    logq = student_logits_NV.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)
''', ["temperature is missing"]),
        ("t-squared-here", '''
def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    T = temperature
    logp = (teacher_logits_NV.float() / T).log_softmax(-1)
    logq = (student_logits_NV.float() / T).log_softmax(-1)
    return T ** 2 * torch.sum(logp.exp() * (logp - logq), dim=-1)
''', ["T²", "not in the KL"]),
        ("mean-over-vocab", '''
def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logp = (teacher_logits_NV.float() / temperature).log_softmax(-1)
    logq = (student_logits_NV.float() / temperature).log_softmax(-1)
    return (logp.exp() * (logp - logq)).mean(-1)
''', ["averaged over the vocabulary", "SUM"]),
    ],
    "kd_loss": [
        ("no-gradient", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z, v, y = student_logits_NV[keep], teacher_logits_NV[keep].detach(), labels_N[keep]
    kl = F.kl_div((z / T).log_softmax(-1), (v / T).log_softmax(-1), log_target=True, reduction="none").sum(-1)
    loss = (alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, y, reduction="none")).mean()
    return torch.tensor(loss.item())
''', ["the loss has no gradient"]),
        ("student-detached", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z, v, y = student_logits_NV[keep].detach(), teacher_logits_NV[keep], labels_N[keep]
    kl = F.kl_div((z / T).log_softmax(-1), (v / T).log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return (alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, y, reduction="none")).mean()
''', ["student's logits got no gradient", "TEACHER"]),
        ("teacher-not-detached", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z, v, y = student_logits_NV[keep], teacher_logits_NV[keep], labels_N[keep]
    kl = F.kl_div((z / T).log_softmax(-1), (v / T).log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return (alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, y, reduction="none")).mean()
''', ["teacher's logits received a gradient", "detach the teacher"]),
        ("gather-with-minus-100", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    T = temperature
    logq = (student_logits_NV / T).log_softmax(-1)
    logp = (teacher_logits_NV.detach() / T).log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    ce = -student_logits_NV.log_softmax(-1).gather(-1, labels_N.unsqueeze(-1)).squeeze(-1)
    keep = labels_N != -100
    return (alpha * T * T * kl + (1 - alpha) * ce)[keep].mean()
''', ["-100", "not token ids"]),
        ("no-t-squared", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    z, v = student_logits_NV[keep].float(), teacher_logits_NV[keep].detach().float()
    p = F.softmax(v / temperature, -1)
    kl = (p * (F.log_softmax(v / temperature, -1) - F.log_softmax(z / temperature, -1))).sum(-1)
    ce = F.cross_entropy(z, labels_N[keep], reduction="none")
    return (alpha * kl + (1 - alpha) * ce).mean()
''', ["T²"]),
        ("mean-over-all-rows", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    T = temperature
    mask = (labels_N != -100).float()
    logp = F.log_softmax(teacher_logits_NV.detach() / T, -1)
    logq = F.log_softmax(student_logits_NV / T, -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    ce = F.cross_entropy(student_logits_NV, labels_N, reduction="none")  # 0 at -100
    return ((alpha * T * T * kl + (1 - alpha) * ce) * mask).mean()
''', ["-100 positions counted in the mean", "kept positions"]),
        ("kl-on-all-rows", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    T = temperature
    logp = F.log_softmax(teacher_logits_NV.detach() / T, -1)
    logq = F.log_softmax(student_logits_NV / T, -1)
    kl = F.kl_div(logq, logp, log_target=True, reduction="batchmean")
    ce = F.cross_entropy(student_logits_NV, labels_N)  # ignore_index=-100 by default
    return alpha * T * T * kl + (1 - alpha) * ce
''', ["KL term included the -100"]),
        ("ce-at-temperature", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z = student_logits_NV[keep] / T
    v = teacher_logits_NV[keep].detach() / T
    kl = (v.softmax(-1) * (v.log_softmax(-1) - z.log_softmax(-1))).sum(-1)
    return (alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, labels_N[keep], reduction="none")).mean()
''', ["temperature 1"]),
        ("reverse-kl", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z, v = student_logits_NV[keep], teacher_logits_NV[keep].detach()
    logq, logp = (z / T).log_softmax(-1), (v / T).log_softmax(-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return (alpha * T * T * kl + (1 - alpha) * F.cross_entropy(z, labels_N[keep], reduction="none")).mean()
''', ["reverse KL"]),
        ("alpha-swapped", '''
def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    import torch.nn.functional as F
    keep = labels_N != -100
    T = temperature
    z, v = student_logits_NV[keep], teacher_logits_NV[keep].detach()
    logq, logp = (z / T).log_softmax(-1), (v / T).log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return ((1 - alpha) * T * T * kl + alpha * F.cross_entropy(z, labels_N[keep], reduction="none")).mean()
''', ["swapped"]),
    ],
    "wsd_alpha": [
        ("divides-by-zero", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    s = step / (steps - 1)
    if s < warmup_frac:
        return alpha_min + (alpha_max - alpha_min) * s / warmup_frac
    if s > 1 - decay_frac:
        return alpha_max - (alpha_max - alpha_min) * (s - 1 + decay_frac) / decay_frac
    return alpha_max
''', ["division by zero", "steps == 1"]),
        ("ramps-in-steps", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    warmup = warmup_frac * steps
    decay = decay_frac * steps
    if step < warmup:
        return alpha_min + (alpha_max - alpha_min) * step / warmup
    if step > steps - decay:
        return alpha_max - (alpha_max - alpha_min) * (step - (steps - decay)) / decay
    return alpha_max
''', ["0-based", "never reaches 1"]),
        ("one-based-steps", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    s = (step + 1) / steps
    if s < warmup_frac:
        return alpha_min + (alpha_max - alpha_min) * s / warmup_frac
    if s > 1 - decay_frac:
        return alpha_max + (alpha_min - alpha_max) * (s - (1 - decay_frac)) / decay_frac
    return alpha_max
''', ["0-based", r"no \+ 1"]),
        ("warm-up-from-zero", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    s = step / max(1, steps - 1)
    if s < warmup_frac:
        return alpha_max * s / warmup_frac
    if s > 1 - decay_frac:
        return alpha_max + (alpha_min - alpha_max) * (s - (1 - decay_frac)) / decay_frac
    return alpha_max
''', ["warm-up starts from α_min"]),
        ("decay-to-zero", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    s = step / max(1, steps - 1)
    if s < warmup_frac:
        return alpha_min + (alpha_max - alpha_min) * s / warmup_frac
    if s > 1 - decay_frac:
        return alpha_max * (1 - s) / decay_frac
    return alpha_max
''', ["decay ends at α_min"]),
    ],
}

RIGHT = {
    "softmax_with_temperature": [("torch.softmax", '''
def softmax_with_temperature(logits_NV, temperature):
    return torch.softmax(logits_NV.float() / temperature, dim=-1)
'''), ("logsumexp", '''
def softmax_with_temperature(logits_NV, temperature):
    z = logits_NV.to(torch.float32) / temperature
    return torch.exp(z - torch.logsumexp(z, dim=-1, keepdim=True))
''')],
    "forward_kl": [("F.kl_div", '''
import torch.nn.functional as F

def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logq = F.log_softmax(student_logits_NV.float() / temperature, dim=-1)
    logp = F.log_softmax(teacher_logits_NV.float() / temperature, dim=-1)
    return F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)
'''), ("cross-entropy-minus-entropy", '''
def forward_kl(teacher_logits_NV, student_logits_NV, temperature):
    logp = torch.log_softmax(teacher_logits_NV.float() / temperature, -1)
    logq = torch.log_softmax(student_logits_NV.float() / temperature, -1)
    p = logp.exp()
    return (p * logp).sum(-1) - (p * logq).sum(-1)
''')],
    "kd_loss": [("masked-sums", '''
import torch.nn.functional as F

def kd_loss(student_logits_NV, teacher_logits_NV, labels_N, temperature, alpha):
    T = temperature
    mask = (labels_N != -100).float()
    logq = F.log_softmax(student_logits_NV.float() / T, -1)
    logp = F.log_softmax(teacher_logits_NV.detach().float() / T, -1)
    kl = F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)
    ce = F.cross_entropy(student_logits_NV.float(), labels_N, reduction="none", ignore_index=-100)
    return ((alpha * T ** 2 * kl + (1 - alpha) * ce) * mask).sum() / mask.sum()
''')],
    "wsd_alpha": [("clamped-ramps", '''
def wsd_alpha(step, steps, alpha_min, alpha_max, warmup_frac, decay_frac):
    s = 0.0 if steps == 1 else step / (steps - 1)
    up = (s / warmup_frac) if s < warmup_frac else 1.0
    down = ((1 - s) / decay_frac) if s > 1 - decay_frac else 1.0
    return alpha_min + (alpha_max - alpha_min) * min(up, down)
''')],
}
