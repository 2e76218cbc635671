"""Chapter 10 exercises: scoring completions after prompts, sequence log-probabilities, the DPO loss and its rewards.

Fill in each function between the markers; check it in the notebook with `check("name", ex.function)` or grade the
whole chapter with `minillama4 grade 10`. Shapes: B sequences, T tokens, V vocabulary, P pairs.
"""

import torch
import torch.nn.functional as F


def completion_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int = 0):
    """A batch for scoring completions: row b is prompts[b] + completions[b], right-padded with pad_id to the longest
    row (length L). Return (inputs [B, L-1], labels [B, L-1]) as int64 tensors: inputs = the padded rows without their
    last column; labels = the padded rows shifted left by one (labels[:, t] is the token after inputs[:, t]), with
    -100 everywhere except on completion tokens (prompt tokens and padding are never scored)."""
    ### BEGIN SOLUTION
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids_BL = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    lab_BL = torch.full((len(prompts), L), -100, dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids_BL[b, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        lab_BL[b, len(p):len(p) + len(c)] = torch.tensor(c, dtype=torch.long)  # completion tokens only
    return ids_BL[:, :-1], lab_BL[:, 1:]
    ### END SOLUTION


def sequence_logprobs(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """log π(completion | prompt) per sequence: the sum over positions whose label is not -100 of
    log softmax(logits[b, t])[labels[b, t]], computed in float32. A sum, not a mean. Returns [B]."""
    ### BEGIN SOLUTION
    keep_BT = labels_BT != -100
    logp_BTV = logits_BTV.float().log_softmax(-1)
    lp_BT = logp_BTV.gather(-1, labels_BT.clamp(min=0)[..., None])[..., 0]  # any valid index where label is -100
    return (lp_BT * keep_BT).sum(-1)
    ### END SOLUTION


def dpo_loss(pc_P: torch.Tensor, pr_P: torch.Tensor, rc_P: torch.Tensor, rr_P: torch.Tensor, beta: float):
    """DPO for P pairs, from sequence log-probs of the chosen (c) and rejected (r) replies under the policy (p·) and
    the frozen reference (r·):

        chosen_rewards = β (pc − rc),  rejected_rewards = β (pr − rr),
        loss = mean −log σ(chosen_rewards − rejected_rewards)

    Return (loss, chosen_rewards, rejected_rewards); the two reward tensors [P] detached. Use F.logsigmoid."""
    ### BEGIN SOLUTION
    chosen_P = beta * (pc_P.float() - rc_P.float())
    rejected_P = beta * (pr_P.float() - rr_P.float())
    loss = -F.logsigmoid(chosen_P - rejected_P).mean()
    return loss, chosen_P.detach(), rejected_P.detach()
    ### END SOLUTION


def pick_pair(correct: list[bool], formatted: list[bool]):
    """Choose a preference pair among G sampled replies to one prompt, given which are correct and which are in the
    house format. Score each reply 2·correct + formatted (3 = the ideal reply). The chosen reply is the first one
    with score 3; the rejected one is the first reply among those with the highest score below 3 (the closest worse
    reply, so that the pair differs in as little as possible). Return (chosen index, rejected index), or None when
    there is no reply with score 3 or none below it."""
    ### BEGIN SOLUTION
    scores = [2 * c + f for c, f in zip(correct, formatted)]
    if 3 not in scores:
        return None
    below = [s for s in scores if s < 3]
    if not below:
        return None
    return scores.index(3), scores.index(max(below))
    ### END SOLUTION
