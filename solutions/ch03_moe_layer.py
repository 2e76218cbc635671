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
    ### BEGIN SOLUTION
    logits_TE = x_TD @ router_w_ED.t()  # router logits
    top_TK, idx_TK = logits_TE.topk(top_k, dim=-1)  # top-k on the raw logits
    scores_TK = torch.sigmoid(top_TK)  # σ of the chosen logits only
    out_TD = torch.zeros_like(x_TD)
    for e in range(router_w_ED.shape[0]):
        tok_n, slot_n = (idx_TK == e).nonzero(as_tuple=True)  # the tokens (and their slot) routed to expert e
        if tok_n.numel() == 0:
            continue
        x_nD = x_TD[tok_n] * scores_TK[tok_n, slot_n, None]  # σ · x: the score goes on the input
        gate_nF, up_nF = (x_nD @ gate_up_proj_ED2F[e]).chunk(2, dim=-1)
        out_TD.index_add_(0, tok_n, (F.silu(gate_nF) * up_nF) @ down_proj_EFD[e])  # scatter-add back
    shared_TD = (F.silu(x_TD @ shared_gate_FD.t()) * (x_TD @ shared_up_FD.t())) @ shared_down_DF.t()  # on plain x
    return shared_TD + out_TD
    ### END SOLUTION


def load_balancing_loss(router_logits_TE: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch Transformer auxiliary loss  L = E · Σ_i f_i · P_i  (a scalar tensor).

    f_i: fraction of the T·k routed assignments (top-k of the raw logits, every one of the k choices counted) that
    went to expert i; P_i: mean over tokens of softmax(logits)_i. L = 1 exactly when routing is uniform."""
    ### BEGIN SOLUTION
    T, E = router_logits_TE.shape
    idx_TK = router_logits_TE.topk(top_k, dim=-1).indices
    f_E = torch.bincount(idx_TK.reshape(-1), minlength=E).float() / (T * top_k)  # share of assignments
    P_E = router_logits_TE.float().softmax(dim=-1).mean(0)  # mean router probability
    return E * (f_E * P_E).sum()
    ### END SOLUTION


def router_z_loss(router_logits_TE: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss  L_z = mean_t (log Σ_i exp(logit_ti))²  (a scalar tensor): keeps the logits small."""
    ### BEGIN SOLUTION
    lse_T = torch.logsumexp(router_logits_TE.float(), dim=-1)  # log Σ_i e^{logit_ti}, computed stably
    return lse_T.square().mean()
    ### END SOLUTION


def moe_layer_indices(num_layers: int, interleave_step: int) -> list[int]:
    """Which decoder layers are MoE: every interleave_step-th layer, counting so that the *last* layer of each group
    of interleave_step layers is the MoE one (Scout: step 1 → every layer; Maverick: step 2 → layers 1, 3, 5, …).
    Returns a list of ints in increasing order."""
    ### BEGIN SOLUTION
    return [i for i in range(num_layers) if (i + 1) % interleave_step == 0]  # = range(step - 1, L, step)
    ### END SOLUTION


def aux_free_bias_update(bias_E: torch.Tensor, indices_TK: torch.Tensor, rate: float) -> torch.Tensor:
    """One step of DeepSeek-V3's auxiliary-loss-free balancing: count the assignments per expert in indices [T, k]
    (load_e), then return a new bias  b_e + rate · sign(mean_e load − load_e)  (under-used experts go up, over-used
    ones go down, an expert at exactly the mean load keeps its bias). Do not modify bias_E in place."""
    ### BEGIN SOLUTION
    load_E = torch.bincount(indices_TK.reshape(-1), minlength=bias_E.shape[0]).float()
    return bias_E + rate * torch.sign(load_E.mean() - load_E)
    ### END SOLUTION
