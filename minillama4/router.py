"""The Llama 4 router: which expert(s) each token goes to, and how strongly.

    logits = x W_rᵀ                      (a linear layer without bias, W_r [E, D])
    idx    = top-k(logits)               (on the raw logits)
    score  = σ(logits[idx])              (sigmoid of the chosen logits only: no softmax, no renormalisation)

The score later multiplies the expert's *input* (`σ · x` goes into the expert), not its output.

`selection_bias` (zeros unless a training recipe changes it; not part of checkpoints) is added to the logits for
*choosing* experts only, never to the scores: the auxiliary-loss-free balancing of DeepSeek-V3 (arXiv 2412.19437)
nudges it up for under-used experts and down for over-used ones. Llama 4's released code has no such term.
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
        self.register_buffer("selection_bias", torch.zeros(num_experts), persistent=False)  # b_E, selection only
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x_TD: torch.Tensor) -> RouterOutput:
        logits_TE = x_TD @ self.weight.t()
        # choose by logits + b, score by the logits alone. With b = 0 (always, outside aux-free balancing) adding it
        # changes no bit, and it costs less than asking the GPU whether b is zero (a sync every layer).
        idx_TK = torch.topk(logits_TE + self.selection_bias.to(logits_TE.dtype), self.top_k, dim=-1).indices
        top_TK = logits_TE.gather(-1, idx_TK)
        scores_TK = torch.sigmoid(top_TK.float()).to(x_TD.dtype)  # σ in float32, like the reference
        return RouterOutput(logits_TE, idx_TK, scores_TK)
