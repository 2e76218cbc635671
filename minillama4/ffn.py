"""SwiGLU feed-forward networks: one dense FFN, and a bank of E experts stored the way checkpoints store them.

    SwiGLU(x) = (silu(x W_gate) ⊙ (x W_up)) W_down          silu(a) = a · σ(a)

`SwiGLU` keeps three `nn.Linear` layers (weights `[out, in]`, used as `x @ Wᵀ`): Llama 4's shared expert and
Maverick's dense layers. `ExpertBank` keeps all E experts in two tensors in the Hugging Face checkpoint layout,
used as `x @ W` (no transpose):

    gate_up_proj [E, D, 2F]   first F columns = gate, last F = up
    down_proj    [E, F, D]
"""

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)  # W_gate [F, D]
        self.up_proj = nn.Linear(dim, hidden, bias=False)  # W_up   [F, D]
        self.down_proj = nn.Linear(hidden, dim, bias=False)  # W_down [D, F]

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        h_TF = F.silu(self.gate_proj(x_TD)) * self.up_proj(x_TD)  # silu(x W_gate) ⊙ x W_up
        return self.down_proj(h_TF)  # [..., D]


def _grouped_mm_ok(x: torch.Tensor, dim: int = 8, hidden: int = 8) -> bool:
    """torch._grouped_mm (one kernel for many matmuls of different heights) exists in recent torch. Every row of
    its operands must start on a 16-byte boundary (D and F in bytes multiples of 16); on CUDA it also wants
    bfloat16 on Hopper or newer. Elsewhere the per-expert loop runs."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if (dim * x.element_size()) % 16 or (hidden * x.element_size()) % 16:
        return False
    if x.device.type == "cpu":
        return True
    return (x.device.type == "cuda" and x.dtype == torch.bfloat16 and dim % 8 == 0 and hidden % 8 == 0
            and torch.cuda.get_device_capability(x.device)[0] >= 9)


GATHER_ROWS = 16  # a call with at most this many (token, expert) rows picks each row's expert weights by index


class ExpertBank(nn.Module):
    """E independent SwiGLU experts in the checkpoint layout. `forward_expert(e, x)` runs one of them;
    `forward_sorted(x_ND, counts_E)` runs each expert on its own contiguous slice of rows (sparse dispatch);
    `forward_gathered(x_ND, expert_N)` runs a few rows, each through its own expert (a decode step);
    `forward(x_ETD)` runs every expert on its own batch (the dense reference computation)."""

    gather_rows = GATHER_ROWS  # up to this many rows the MoE layer calls forward_gathered (0: never)

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, dim, 2 * hidden))  # w_ED(2F)
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, dim))  # w_EFD
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def forward_expert(self, e: int, x_TD: torch.Tensor) -> torch.Tensor:
        gate_TF, up_TF = (x_TD @ self.gate_up_proj[e]).chunk(2, dim=-1)  # x W_gate, x W_up in one matmul
        return (F.silu(gate_TF) * up_TF) @ self.down_proj[e]  # [T, D]

    def forward_sorted(self, x_ND: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Rows of x_ND grouped by expert: the first counts_E[0] rows go to expert 0, the next counts_E[1] to
        expert 1, and so on. Returns each row's expert output [N, D]."""
        if _grouped_mm_ok(x_ND, self.dim, self.hidden):  # fast path: one grouped kernel per projection, same result
            offs_E = counts_E.cumsum(0).to(torch.int32)  # end row of each expert's slice
            gate_NF, up_NF = torch._grouped_mm(x_ND, self.gate_up_proj, offs=offs_E).chunk(2, dim=-1)
            return torch._grouped_mm(F.silu(gate_NF) * up_NF, self.down_proj, offs=offs_E)
        # The readable loop. Unbind the weights once: indexing gate_up_proj[e] inside the loop would make autograd
        # build a full-size gradient of the whole bank for every expert.
        w1_E, w2_E = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)
        ys = []
        for e, x_nD in enumerate(x_ND.split(counts_E.tolist())):
            if x_nD.shape[0]:
                gate_nF, up_nF = (x_nD @ w1_E[e]).chunk(2, dim=-1)
                ys.append((F.silu(gate_nF) * up_nF) @ w2_E[e])
        return torch.cat(ys) if ys else x_ND.new_zeros(0, self.dim)

    def forward_gathered(self, x_ND: torch.Tensor, expert_N: torch.Tensor) -> torch.Tensor:
        """Row n through expert expert_N[n] → [N, D]. Each row's weights are picked on the device (`index_select`):
        nothing is read back to the host and no shape depends on the routing, so a decode step written this way
        compiles whole. It copies the chosen experts' weights: worth it for a few rows only (GATHER_ROWS)."""
        w1_NDH = self.gate_up_proj.index_select(0, expert_N)  # [N, D, 2F]: row n's expert's W_gate | W_up
        gate_NF, up_NF = torch.bmm(x_ND[:, None, :], w1_NDH)[:, 0].chunk(2, dim=-1)
        w2_NFD = self.down_proj.index_select(0, expert_N)  # [N, F, D]
        return torch.bmm((F.silu(gate_NF) * up_NF)[:, None, :], w2_NFD)[:, 0]

    def forward(self, x_ETD: torch.Tensor) -> torch.Tensor:
        gate_ETF, up_ETF = torch.bmm(x_ETD, self.gate_up_proj).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate_ETF) * up_ETF, self.down_proj)  # [E, T, D]
