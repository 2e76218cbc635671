"""Chapter 09 exercises: group-relative advantages, the clipped policy objective, the k3 KL to the reference, and
the curriculum over difficulty levels.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 9`. Shapes: P prompts, G samples per
prompt, B completions, T tokens.
"""

import torch


def group_advantages(rewards_PG: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages for rewards_PG [P, G] (G sampled replies to each of P prompts):

        a_ij = (r_ij − mean_j r_ij) / (std_j r_ij + eps)        std: torch's default (unbiased, divides by G − 1)

    and keep_P [P] (bool), False for a group whose rewards are all equal; its advantages must be exactly 0.
    Returns (advantages [P, G] float32, keep [P])."""
    ### BEGIN SOLUTION
    r_PG = rewards_PG.float()
    keep_P = (r_PG != r_PG[:, :1]).any(-1)  # some reply scored differently from the first
    adv_PG = (r_PG - r_PG.mean(-1, keepdim=True)) / (r_PG.std(-1, keepdim=True) + eps)
    return torch.where(keep_P[:, None], adv_PG, torch.zeros_like(adv_PG)), keep_P
    ### END SOLUTION


def clipped_policy_loss(logp_new_BT: torch.Tensor, logp_old_BT: torch.Tensor, adv_B: torch.Tensor,
                        mask_BT: torch.Tensor, clip_eps: float = 0.2) -> torch.Tensor:
    """The clipped surrogate, averaged over the completion tokens of the whole batch (mask_BT True):

        ρ_t = exp(logp_new_t − logp_old_t),   L = mean_t −min(ρ_t · a, clip(ρ_t, 1 − ε, 1 + ε) · a)

    a = adv_B[b] for every token of completion b. Returns a scalar (float32)."""
    ### BEGIN SOLUTION
    a_B1 = adv_B.float()[:, None]  # one advantage per completion, for all its tokens
    ratio_BT = torch.exp(logp_new_BT.float() - logp_old_BT.float())  # ρ = π_new / π_old
    surrogate_BT = torch.minimum(ratio_BT * a_B1, ratio_BT.clamp(1 - clip_eps, 1 + clip_eps) * a_B1)
    m_BT = mask_BT.float()
    return -(surrogate_BT * m_BT).sum() / m_BT.sum()  # token mean over the completion tokens
    ### END SOLUTION


def k3_kl(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) at sampled tokens (Schulman's k3, always ≥ 0):
    with d = ref_logp − logp,  k3 = exp(d) − d − 1. Returns [B, T] (float32)."""
    ### BEGIN SOLUTION
    d_BT = ref_logp_BT.float() - logp_BT.float()  # log π_ref / π_θ
    return torch.exp(d_BT) - d_BT - 1
    ### END SOLUTION


def curriculum_weights(step: int, steps: int, start: list[float], end: list[float]) -> list[float]:
    """Level weights of a curriculum that moves linearly from `start` (at step 0) to `end` (at step steps − 1):
    f = step / max(1, steps − 1), w = (1 − f) · start + f · end, one weight per level. Returns a list of floats."""
    ### BEGIN SOLUTION
    f = step / max(1, steps - 1)
    return [(1 - f) * a + f * b for a, b in zip(start, end)]
    ### END SOLUTION
