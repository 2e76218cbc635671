# GENERATED from solutions/ch01_swiglu_experts.py by scripts/make_exercises.py (stub 6b0a32413aac): this is your file, fill in the stubs.
"""Chapter 01 exercises: RMSNorm, SwiGLU, and a bank of experts in the checkpoint layout.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 1`. Shapes: T tokens, D model width, F hidden
width, E experts.
"""

import torch
import torch.nn.functional as F


def rms_norm(x_TD: torch.Tensor, weight_D: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm(x) = x / sqrt(mean(x²) + eps) · w, over the last dimension.
    Compute the normalisation in float32, cast back to x's dtype, then multiply by the weight (Llama 4's order)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def swiglu(x_TD: torch.Tensor, w_gate_FD: torch.Tensor, w_up_FD: torch.Tensor, w_down_DF: torch.Tensor) -> torch.Tensor:
    """SwiGLU(x) = (silu(x W_gateᵀ) ⊙ (x W_upᵀ)) W_downᵀ, with nn.Linear-style weights [out, in]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def expert_forward(x_TD: torch.Tensor, gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor,
                   e: int) -> torch.Tensor:
    """Expert e of a bank stored as checkpoints store it: gate_up_proj [E, D, 2F] (first F columns = gate, last F =
    up) and down_proj [E, F, D], both used as x @ W (no transpose). Returns [T, D]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def all_experts_forward(x_ETD: torch.Tensor, gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor) -> torch.Tensor:
    """Every expert on its own batch of tokens at once: x_ETD [E, T, D] → [E, T, D]. Use batched matmuls
    (torch.bmm or @ on 3-D tensors), no Python loop over experts."""
    # YOUR CODE HERE
    raise NotImplementedError()
