# GENERATED from solutions/ch02_router_scatter_add.py by scripts/make_exercises.py (stub c48eb5a208f6): this is your file, fill in the stubs.
"""Chapter 02 exercises: the router, dispatch by sorting, sparse experts with a scatter-add combine, and the dense
emulation that transformers uses.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 2`. Shapes: T tokens, D model width, F hidden
width of one expert, E experts, K experts per token (top-k), N = T·K (token, expert) assignments.
"""

import torch
import torch.nn.functional as F


def route(x_TD: torch.Tensor, w_router_ED: torch.Tensor, top_k: int):
    """The Llama 4 router. Returns (logits_TE, indices_TK, scores_TK):

        logits = x W_rᵀ                     a linear layer without bias, W_r [E, D] (nn.Linear layout)
        idx    = top-k(logits)              on the raw logits, best first
        score  = σ(logits[idx])             sigmoid of the chosen logits only: no softmax, no renormalisation

    Compute the sigmoid in float32 and cast the scores back to x's dtype (what the reference does)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def dispatch(idx_TK: torch.Tensor, num_experts: int):
    """Sort the N = T·K (token, slot) assignments by expert, keeping their original order within each expert
    (a *stable* sort). Returns (token_N, slot_N, counts_E):

        slot_N[n]   the flat position (t·K + j) in idx_TK of the n-th assignment in expert order
        token_N[n]  the token t that assignment came from
        counts_E[e] how many assignments expert e received (0 for an expert nobody chose; length E)"""
    # YOUR CODE HERE
    raise NotImplementedError()


def routed_experts(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor,
                   gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor) -> torch.Tensor:
    """The routed half of a Llama 4 MoE layer, computed sparsely:

        out_t = Σ_{j < K} expert_{idx[t, j]}(score[t, j] · x_t)          (the score scales the expert's INPUT)

    with expert_e(h) = (silu(h W_gate) ⊙ (h W_up)) W_down from the checkpoint layout gate_up_proj [E, D, 2F]
    (first F columns = gate) and down_proj [E, F, D], used as h @ W. Run each expert only on the rows routed to it
    (sort the assignments by expert, as in `dispatch`), then add every result back to its token with `index_add_`
    (or `scatter_add_`). Returns [T, D]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def dense_routed_experts(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor,
                         gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor) -> torch.Tensor:
    """The same sum computed the way transformers' Llama 4 does it: every expert on every token.

        score_TE[t, e] = score[t, j] if idx[t, j] == e else 0           (scatter the K scores into a [T, E] table)
        out_t = Σ_e expert_e(score_TE[t, e] · x_t)                      (expert_e(0) = 0, so the zeros add nothing)

    Build the [E, T, D] stack of scaled inputs and use batched matmuls (torch.bmm), no loop over experts."""
    # YOUR CODE HERE
    raise NotImplementedError()
