"""Training losses: MoE balancing (pretraining), distillation, and the post-training losses (SFT, RL, DPO).

Load balancing (Switch Transformer, arXiv 2101.03961): with E experts, f_i the fraction of routed assignments that
went to expert i (all k choices counted, divided by k) and P_i the mean softmax router probability of expert i,

    L_balance = E · Σ_i f_i · P_i          = 1 exactly when routing is uniform, larger when it collapses.

Router z-loss (ST-MoE, arXiv 2202.08906) keeps the router logits small:  L_z = mean_t (log Σ_i e^{logit_ti})².
Llama 4's released code computes neither; they are the course's tools for training toy MoEs that use all experts.

Knowledge distillation (Hinton et al., arXiv 1503.02531), per position with label y, student logits z, teacher v:

    L_KD = α · T² · KL(softmax(v/T) ‖ softmax(z/T)) + (1 − α) · CE(softmax(z), y)

averaged over the positions whose label is not -100 (IGNORE_INDEX). T² keeps the soft term's gradient on the scale of
the hard one as T changes (the soft gradient is (q − p)/T per logit, ≈ (z − v)/(N·T²) for large T).

DPO (Rafailov et al., arXiv 2305.18290), with sequence log-probs of the chosen/rejected completions under the policy
(pc, pr) and the frozen reference (rc, rr):

    L_DPO = mean −log σ(β · ((pc − rc) − (pr − rr)))          = ln 2 at init (policy = reference)

Group-relative advantages (GRPO, arXiv 2402.03300): a_ij = (r_ij − mean_j r_ij) / (std_j r_ij + 1e-4), per prompt i
over its G samples j. A group whose rewards are all equal has a = 0 and gives no gradient: the RL loop drops it
(Llama 4's "zero-advantage filtering", DAPO's "dynamic sampling").

Clipped policy loss (PPO, arXiv 1707.06347) per completion token with ratio ρ = exp(log π_new − log π_old):

    L_clip = −min(ρ · a, clip(ρ, 1 − ε, 1 + ε) · a)           averaged over the completion tokens (DAPO token mean)

KL to the reference, per token, by Schulman's k3 estimator (unbiased, ≥ 0):  exp(r − p) − (r − p) − 1,
p = log π_θ(token), r = log π_ref(token).

Shift convention for every function that takes `logits` and `labels`: logits[..., t, :] is the distribution that
labels[..., t] is scored under. The caller shifts (for a causal LM: logits = model(ids)[:, :-1], labels = ids[:, 1:],
or labels built already shifted as in `train.get_batch`). Label -100 marks a position that does not count.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label value of positions that no loss counts (prompt tokens, padding)


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


# ---------------------------------------------------------------------------------------------------------------------
# helpers shared by the losses below


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, name: str = "logits") -> None:
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"{name} {tuple(logits.shape)} must be labels {tuple(labels.shape)} + [vocab] "
                         f"(logits[..., t, :] scores labels[..., t]; shift before calling)")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be integer token ids (with -100 for ignored positions), got {labels.dtype}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= logits.shape[-1]))
    if bad.any():
        raise ValueError(f"labels must be in [0, {logits.shape[-1]}) or -100; found {labels[bad][0].item()}")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[..., t]) under logits[..., t, :], in float32; 0 where the label is -100.  [...] → [...]"""
    _check_logits_labels(logits, labels)
    mask = labels != IGNORE_INDEX
    logp_V = logits.float().log_softmax(-1)
    lp = logp_V.gather(-1, labels.clamp(min=0).long().unsqueeze(-1)).squeeze(-1)  # log p_t(y_t)
    return lp * mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sequence, the sum of log p(label) over the positions whose label is not -100 (the completion tokens).

    logits [B, T, V], labels [B, T] (already shifted: logits[:, t] predicts labels[:, t]) → [B] (float32).
    """
    if labels.dim() < 1:
        raise ValueError("labels must have a sequence dimension: [B, T] (or [T])")
    return token_logprobs(logits, labels).sum(-1)  # log π(y | x) = Σ_t log π(y_t | x, y_<t)


# ---------------------------------------------------------------------------------------------------------------------
# distillation


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """α · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α) · CE(student, labels), averaged over the
    positions whose label is not -100.

    student_logits, teacher_logits [..., V]; labels [...] (logits[..., t, :] scores labels[..., t]). The teacher gets no
    gradient (it is detached). Returns a float32 scalar; raises if no position counts.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (same tokens, same vocabulary)")
    _check_logits_labels(student_logits, labels, "student logits")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the weight of the soft targets) must be in [0, 1], got {alpha}")
    mask = labels != IGNORE_INDEX
    n = mask.sum()
    if n == 0:
        raise ValueError("every label is -100: no position to average the distillation loss over")
    z_NV = student_logits[mask].float()  # the counted positions only
    v_NV = teacher_logits[mask].detach().float()
    y_N = labels[mask].long()
    T = float(temperature)
    logq_NV = (z_NV / T).log_softmax(-1)  # student at temperature T
    logp_NV = (v_NV / T).log_softmax(-1)  # teacher at temperature T
    kl_N = (logp_NV.exp() * (logp_NV - logq_NV)).sum(-1)  # KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)
    ce_N = F.cross_entropy(z_NV, y_N, reduction="none")  # −log softmax(z)_y
    return (alpha * T * T * kl_N + (1.0 - alpha) * ce_N).mean()


# ---------------------------------------------------------------------------------------------------------------------
# DPO


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1):
    """(loss, chosen_rewards, rejected_rewards) for a batch of preference pairs; all inputs [P] sequence log-probs.

    loss = mean −log σ(β · ((pc − rc) − (pr − rr))); chosen_rewards = β · (pc − rc), rejected_rewards = β · (pr − rr)
    (per pair, detached). The reference log-probs get no gradient.
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                       ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss needs four log-prob tensors of one shape [pairs], got shapes {sorted(shapes)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_logratio = policy_chosen_logps.float() - ref_chosen_logps.detach().float()  # log π/π_ref (chosen)
    rejected_logratio = policy_rejected_logps.float() - ref_rejected_logps.detach().float()
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach()


# ---------------------------------------------------------------------------------------------------------------------
# online RL


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4):
    """rewards [prompts, group] → (advantages [prompts, group], keep_mask [prompts]).

    a = (r − mean_group) / (std_group + eps), std unbiased (torch's default); keep_mask is False for groups whose
    rewards are all equal (their advantages are exactly 0).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, group], got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"a group needs at least 2 samples per prompt to compare, got {rewards.shape[1]}")
    r = rewards.float()
    mean_P1 = r.mean(-1, keepdim=True)
    std_P1 = r.std(-1, keepdim=True)  # unbiased (divides by G − 1)
    keep_P = (r != r[:, :1]).any(-1)  # some sample differs from the first one
    adv = (r - mean_P1) / (std_P1 + eps)
    adv = torch.where(keep_P[:, None], adv, torch.zeros_like(adv))  # exactly 0 for all-equal groups
    return adv, keep_P


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is True (a token mean over completion tokens)."""
    if x.shape != mask.shape:
        raise ValueError(f"values {tuple(x.shape)} and mask {tuple(mask.shape)} must have the same shape")
    n = mask.sum()
    if n == 0:
        raise ValueError("the mask selects no position: nothing to average")
    return (x * mask).sum() / n


def clipped_policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_eps: float = 0.2) -> torch.Tensor:
    """PPO/GRPO clipped surrogate, token mean over the completion tokens.

    logp_new, logp_old [B, T] per-token log-probs of the sampled tokens (new: with gradient; old: from sampling time,
    detached); advantages [B] (one per completion, broadcast over its tokens) or [B, T]; mask [B, T] bool
    (True on completion tokens). −min(ρ·a, clip(ρ, 1−ε, 1+ε)·a) with ρ = exp(logp_new − logp_old).
    With logp_old = logp_new.detach() (one update per sample) ρ = 1 and the gradient is −a·∇log π (REINFORCE).
    """
    if logp_new.shape != logp_old.shape or logp_new.shape != mask.shape:
        raise ValueError(f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape [B, T]")
    if advantages.dim() == 1:
        if advantages.shape[0] != logp_new.shape[0]:
            raise ValueError(f"advantages [{advantages.shape[0]}] must have one value per completion "
                             f"({logp_new.shape[0]})")
        advantages = advantages[:, None]
    elif advantages.shape != logp_new.shape:
        raise ValueError(f"advantages must be [B] or [B, T] = {tuple(logp_new.shape)}, got {tuple(advantages.shape)}")
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    a = advantages.detach().float()
    ratio = torch.exp(logp_new.float() - logp_old.detach().float())  # ρ = π_new / π_old
    unclipped = ratio * a
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    return masked_mean(-torch.minimum(unclipped, clipped), mask.bool())


def kl_to_reference(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref) at the sampled tokens: exp(r − p) − (r − p) − 1 ≥ 0.

    logp (with gradient) and ref_logp (detached: the reference gets none) are per-token log-probs of the same tokens.
    Average it with `masked_mean` over completion tokens and add β times it to the policy loss.
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must have the same shape")
    d = ref_logp.detach().float() - logp.float()  # log π_ref/π_θ
    return torch.exp(d) - d - 1
