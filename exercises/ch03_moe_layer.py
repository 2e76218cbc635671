# GENERATED from solutions/ch03_moe_layer.py by scripts/make_exercises.py (stub 7f5a60381509): this is your file, fill in the stubs.
"""Chapter 03 exercises: the whole MoE block, the load-balancing losses, the layer plans, aux-loss-free balancing.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 3`. Shapes: T tokens, D model width, F hidden
width of one expert, E experts, k experts per token.
"""

import torch
import torch.nn.functional as F


def moe_forward(x_TD: torch.Tensor, router_w_ED: torch.Tensor, gate_up_proj_ED2F: torch.Tensor,
                down_proj_EFD: torch.Tensor, shared_gate_FD: torch.Tensor, shared_up_FD: torch.Tensor,
                shared_down_DF: torch.Tensor, top_k: int) -> torch.Tensor:
    """A Llama 4 MoE block: out(x) = shared(x) + Σ_{e ∈ top-k(x)} expert_e(σ(logit_e) · x).

    Router: logits = x W_rᵀ (router_w [E, D]), top-k on the raw logits, score = sigmoid of the chosen logits (no
    softmax). The score multiplies the expert's *input*. Routed experts are in the checkpoint layout
    (gate_up_proj [E, D, 2F]: first F columns = gate, last F = up; down_proj [E, F, D]; used as x @ W). The shared
    expert is a SwiGLU with nn.Linear weights [out, in] and sees the unscaled x. Returns [T, D]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def load_balancing_loss(router_logits_TE: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch Transformer auxiliary loss  L = E · Σ_i f_i · P_i  (a scalar tensor).

    f_i: fraction of the T·k routed assignments (top-k of the raw logits, every one of the k choices counted) that
    went to expert i; P_i: mean over tokens of softmax(logits)_i. L = 1 exactly when routing is uniform."""
    # YOUR CODE HERE
    raise NotImplementedError()


def router_z_loss(router_logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss  L_z = mean_t (log Σ_i exp(logit_ti))²  (a scalar tensor): keeps the logits small."""
    # YOUR CODE HERE
    raise NotImplementedError()


def moe_layer_indices(num_layers: int, interleave_step: int) -> list[int]:
    """Which decoder layers are MoE: every interleave_step-th layer, counting so that the *last* layer of each group
    of interleave_step layers is the MoE one (Scout: step 1 → every layer; Maverick: step 2 → layers 1, 3, 5, …).
    Returns a list of ints in increasing order."""
    # YOUR CODE HERE
    raise NotImplementedError()


def aux_free_bias_update(bias_E: torch.Tensor, indices_TK: torch.Tensor, rate: float) -> torch.Tensor:
    """One step of DeepSeek-V3's auxiliary-loss-free balancing: count the assignments per expert in indices [T, k]
    (load_e), then return a new bias  b_e + rate · sign(mean_e load − load_e)  (under-used experts go up, over-used
    ones go down, an expert at exactly the mean load keeps its bias). Do not modify bias_E in place."""
    # YOUR CODE HERE
    raise NotImplementedError()
