"""Chapter 01: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "rms_norm": [
        ("sum-of-squares", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD.float()
    return (x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps)).to(x_TD.dtype) * weight_D
''', ["SUM"]),
        ("eps-outside-sqrt", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD.float()
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    return (x / (rms + eps)).to(x_TD.dtype) * weight_D
''', ["inside the square root"]),
        ("no-eps", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD.float()
    return (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True))).to(x_TD.dtype) * weight_D
''', ["ε is missing"]),
        ("weight-before-cast", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD.float()
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight_D.float()
    return y.to(x_TD.dtype)
''', ["before casting back"]),
        ("no-weight", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    return x_TD / torch.sqrt(x_TD.pow(2).mean(-1, keepdim=True) + eps)
''', ["weight"]),
        ("layernorm", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD - x_TD.mean(-1, keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight_D
''', ["LayerNorm"]),
        ("over-tokens", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    return x_TD * torch.rsqrt(x_TD.pow(2).mean(0) + eps) * weight_D
''', ["dim 0|tokens"]),
    ],
    "swiglu": [
        ("silu-on-up", '''
def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return ((x_TD @ w_gate_FD.T) * F.silu(x_TD @ w_up_FD.T)) @ w_down_DF.T
''', ["GATE"]),
        ("relu", '''
def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return (torch.relu(x_TD @ w_gate_FD.t()) * (x_TD @ w_up_FD.t())) @ w_down_DF.t()
''', ["ReLU"]),
        ("sigmoid", '''
def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return (torch.sigmoid(x_TD @ w_gate_FD.t()) * (x_TD @ w_up_FD.t())) @ w_down_DF.t()
''', ["sigmoid"]),
        ("no-transpose", '''
def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return (F.silu(x_TD @ w_gate_FD) * (x_TD @ w_up_FD)) @ w_down_DF
''', [r"\[out, in\]"]),
    ],
    "expert_forward": [
        ("halves-swapped", '''
def expert_forward(x_TD, gate_up_proj_ED2F, down_proj_EFD, e):
    F_ = down_proj_EFD.shape[1]
    h = x_TD @ gate_up_proj_ED2F[e]
    up, gate = h[:, :F_], h[:, F_:]
    return (F.silu(gate) * up) @ down_proj_EFD[e]
''', ["swapped"]),
        ("interleaved", '''
def expert_forward(x_TD, gate_up_proj_ED2F, down_proj_EFD, e):
    h = x_TD @ gate_up_proj_ED2F[e]
    return (F.silu(h[:, ::2]) * h[:, 1::2]) @ down_proj_EFD[e]
''', ["interleaved"]),
        ("transposed", '''
def expert_forward(x_TD, gate_up_proj_ED2F, down_proj_EFD, e):
    gate, up = (x_TD @ gate_up_proj_ED2F[e].T).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ down_proj_EFD[e].T
''', ["no transpose"]),
    ],
    "all_experts_forward": [
        ("expert-0-everywhere", '''
def all_experts_forward(x_ETD, gate_up_proj_ED2F, down_proj_EFD):
    gate, up = (x_ETD @ gate_up_proj_ED2F[0]).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ down_proj_EFD[0]
''', ["own weights"]),
        ("halves-swapped", '''
def all_experts_forward(x_ETD, gate_up_proj_ED2F, down_proj_EFD):
    up, gate = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD)
''', ["swapped"]),
        ("interleaved", '''
def all_experts_forward(x_ETD, gate_up_proj_ED2F, down_proj_EFD):
    h = torch.bmm(x_ETD, gate_up_proj_ED2F)
    return torch.bmm(F.silu(h[..., 0::2]) * h[..., 1::2], down_proj_EFD)
''', ["interleaved"]),
        ("transposed", '''
def all_experts_forward(x_ETD, gate_up_proj_ED2F, down_proj_EFD):
    h = torch.bmm(x_ETD, gate_up_proj_ED2F.transpose(1, 2))
    gate, up = h.chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down_proj_EFD.transpose(1, 2))
''', ["no transpose"]),
    ],
}

RIGHT = {
    "rms_norm": [("rsqrt-of-mean-square", '''
def rms_norm(x_TD, weight_D, eps=1e-5):
    x = x_TD.to(torch.float32)
    ms = (x * x).sum(-1, keepdim=True) / x.shape[-1]
    return (x / torch.sqrt(ms + eps)).to(x_TD.dtype) * weight_D
''')],
    "swiglu": [("F.linear", '''
def swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return F.linear(F.silu(F.linear(x_TD, w_gate_FD)) * F.linear(x_TD, w_up_FD), w_down_DF)
''')],
    "expert_forward": [("two-slices", '''
def expert_forward(x_TD, gate_up_proj_ED2F, down_proj_EFD, e):
    F_ = down_proj_EFD.shape[1]
    w = gate_up_proj_ED2F[e]
    return (F.silu(x_TD @ w[:, :F_]) * (x_TD @ w[:, F_:])) @ down_proj_EFD[e]
''')],
    "all_experts_forward": [("einsum", '''
def all_experts_forward(x_ETD, gate_up_proj_ED2F, down_proj_EFD):
    h = torch.einsum("etd,edf->etf", x_ETD, gate_up_proj_ED2F)
    gate, up = h.chunk(2, -1)
    return torch.einsum("etf,efd->etd", F.silu(gate) * up, down_proj_EFD)
''')],
}
