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
    ### BEGIN SOLUTION
    logits_TE = x_TD @ w_router_ED.t()  # x W_rᵀ
    top_TK, indices_TK = torch.topk(logits_TE, top_k, dim=-1)  # top-k on the raw logits
    scores_TK = torch.sigmoid(top_TK.float()).to(x_TD.dtype)  # σ of the chosen logits, in float32
    return logits_TE, indices_TK, scores_TK
    ### END SOLUTION


def dispatch(idx_TK: torch.Tensor, num_experts: int):
    """Sort the N = T·K (token, slot) assignments by expert, keeping their original order within each expert
    (a *stable* sort). Returns (token_N, slot_N, counts_E):

        slot_N[n]   the flat position (t·K + j) in idx_TK of the n-th assignment in expert order
        token_N[n]  the token t that assignment came from
        counts_E[e] how many assignments expert e received (0 for an expert nobody chose; length E)"""
    ### BEGIN SOLUTION
    flat_N = idx_TK.reshape(-1)  # expert of each assignment, in token order
    slot_N = torch.argsort(flat_N, stable=True)  # assignments grouped by expert, ties kept in token order
    token_N = slot_N // idx_TK.shape[1]  # flat position t·K + j → token t
    counts_E = torch.bincount(flat_N, minlength=num_experts)  # [E], zeros included
    return token_N, slot_N, counts_E
    ### END SOLUTION


def routed_experts(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor,
                   gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor) -> torch.Tensor:
    """The routed half of a Llama 4 MoE layer, computed sparsely:

        out_t = Σ_{j < K} expert_{idx[t, j]}(score[t, j] · x_t)          (the score scales the expert's INPUT)

    with expert_e(h) = (silu(h W_gate) ⊙ (h W_up)) W_down from the checkpoint layout gate_up_proj [E, D, 2F]
    (first F columns = gate) and down_proj [E, F, D], used as h @ W. Run each expert only on the rows routed to it
    (sort the assignments by expert, as in `dispatch`), then add every result back to its token with `index_add_`
    (or `scatter_add_`). Returns [T, D]."""
    ### BEGIN SOLUTION
    E = gate_up_proj_ED2F.shape[0]
    flat_N = idx_TK.reshape(-1)
    slot_N = torch.argsort(flat_N, stable=True)  # assignments grouped by expert
    token_N = slot_N // idx_TK.shape[1]
    counts_E = torch.bincount(flat_N, minlength=E)
    x_ND = x_TD[token_N] * scores_TK.reshape(-1, 1)[slot_N]  # σ · x: the score goes on the input
    out_TD = torch.zeros_like(x_TD)
    start = 0
    for e, n in enumerate(counts_E.tolist()):
        if n == 0:  # nobody chose expert e: skip it entirely
            continue
        rows = slice(start, start + n)  # expert e's contiguous slice of the sorted assignments
        gate_nF, up_nF = (x_ND[rows] @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        y_nD = (F.silu(gate_nF) * up_nF) @ down_proj_EFD[e]  # expert_e on its own n rows only
        out_TD.index_add_(0, token_N[rows], y_nD)  # scatter-add back: out[token_N[i]] += y[i]
        start += n
    return out_TD
    ### END SOLUTION


def dense_routed_experts(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor,
                         gate_up_proj_ED2F: torch.Tensor, down_proj_EFD: torch.Tensor) -> torch.Tensor:
    """The same sum computed the way transformers' Llama 4 does it: every expert on every token.

        score_TE[t, e] = score[t, j] if idx[t, j] == e else 0           (scatter the K scores into a [T, E] table)
        out_t = Σ_e expert_e(score_TE[t, e] · x_t)                      (expert_e(0) = 0, so the zeros add nothing)

    Build the [E, T, D] stack of scaled inputs and use batched matmuls (torch.bmm), no loop over experts."""
    ### BEGIN SOLUTION
    T, E = x_TD.shape[0], gate_up_proj_ED2F.shape[0]
    score_TE = torch.zeros(T, E, dtype=x_TD.dtype, device=x_TD.device).scatter_(1, idx_TK, scores_TK)
    x_ETD = score_TE.t()[:, :, None] * x_TD[None]  # expert e's input: σ_e · x (0 where not routed)
    gate_ETF, up_ETF = torch.bmm(x_ETD, gate_up_proj_ED2F).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate_ETF) * up_ETF, down_proj_EFD).sum(0)  # [E, T, D] → [T, D]
    ### END SOLUTION
