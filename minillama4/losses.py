"""Training losses. (Distillation, DPO and GRPO join these in the post-training chapters.)

Load balancing (Switch Transformer, arXiv 2101.03961): with E experts, f_i the fraction of routed assignments that
went to expert i (all k choices counted, divided by k) and P_i the mean softmax router probability of expert i,

    L_balance = E · Σ_i f_i · P_i          = 1 exactly when routing is uniform, larger when it collapses.

Router z-loss (ST-MoE, arXiv 2202.08906) keeps the router logits small:  L_z = mean_t (log Σ_i e^{logit_ti})².
Llama 4's released code computes neither; they are the course's tools for training toy MoEs that use all experts.
"""

import torch


def load_balancing_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """router_logits [..., E] (one row per token) → scalar E · Σ_i f_i P_i."""
    logits_TE = router_logits.reshape(-1, router_logits.shape[-1])
    E = logits_TE.shape[-1]
    idx_TK = logits_TE.topk(top_k, dim=-1).indices
    f_E = torch.bincount(idx_TK.reshape(-1), minlength=E).to(logits_TE.dtype) / idx_TK.numel()  # share of assignments
    P_E = logits_TE.float().softmax(-1).mean(0)  # mean router probability (this is what carries the gradient)
    return E * (f_E.float() * P_E).sum()


def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """mean over tokens of (logsumexp of the router logits)²."""
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean()
