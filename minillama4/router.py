"""The Llama 4 router: which expert(s) each token goes to, and how strongly.

    logits = x W_rᵀ                      (a linear layer without bias, W_r [E, D])
    idx    = top-k(logits)               (on the raw logits)
    score  = σ(logits[idx])              (sigmoid of the chosen logits only: no softmax, no renormalisation)

The score later multiplies the expert's *input* (`σ · x` goes into the expert), not its output.
"""

from typing import NamedTuple

import torch
from torch import nn


class RouterOutput(NamedTuple):
    logits: torch.Tensor  # [T, E] raw router logits (for load-balancing losses and pictures)
    indices: torch.Tensor  # [T, k] chosen experts per token, best first
    scores: torch.Tensor  # [T, k] sigmoid of the chosen logits, in the input's dtype


class Router(nn.Module):
    def __init__(self, dim: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(num_experts, dim))  # W_r [E, D]
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x_TD: torch.Tensor) -> RouterOutput:
        logits_TE = x_TD @ self.weight.t()
        top_TK, idx_TK = torch.topk(logits_TE, self.top_k, dim=-1)
        scores_TK = torch.sigmoid(top_TK.float()).to(x_TD.dtype)  # σ in float32, like the reference
        return RouterOutput(logits_TE, idx_TK, scores_TK)
