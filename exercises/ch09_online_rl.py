# GENERATED from solutions/ch09_online_rl.py by scripts/make_exercises.py (stub 45651a0651d5): this is your file, fill in the stubs.
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
    # YOUR CODE HERE
    raise NotImplementedError()


def clipped_policy_loss(logp_new_BT: torch.Tensor, logp_old_BT: torch.Tensor, adv_B: torch.Tensor,
                        mask_BT: torch.Tensor, clip_eps: float = 0.2) -> torch.Tensor:
    """The clipped surrogate, averaged over the completion tokens of the whole batch (mask_BT True):

        ρ_t = exp(logp_new_t − logp_old_t),   L = mean_t −min(ρ_t · a, clip(ρ_t, 1 − ε, 1 + ε) · a)

    a = adv_B[b] for every token of completion b. Returns a scalar (float32)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def k3_kl(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) at sampled tokens (Schulman's k3, always ≥ 0):
    with d = ref_logp − logp,  k3 = exp(d) − d − 1. Returns [B, T] (float32)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def curriculum_weights(step: int, steps: int, start: list[float], end: list[float]) -> list[float]:
    """Level weights of a curriculum that moves linearly from `start` (at step 0) to `end` (at step steps − 1):
    f = step / max(1, steps − 1), w = (1 − f) · start + f · end, one weight per level. Returns a list of floats."""
    # YOUR CODE HERE
    raise NotImplementedError()
