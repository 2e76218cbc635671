"""RMSNorm, with and without a learned scale.

    RMSNorm(x) = x / sqrt(mean(x²) + eps) · w

Computed in float32, cast back to the input dtype, and only then multiplied by the weight: this placement is what
the reference does, and it matters in bfloat16. Llama 4's QK-norm is the same formula without `w` (transformers
calls it `L2Norm`, but it divides by the root-mean-square, not by the L2 norm).
"""

import torch
from torch import nn


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS norm over the last dimension, in float32, returned in x's dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)  # x / √(mean(x²) + ε)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # w_D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
