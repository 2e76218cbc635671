# GENERATED from solutions/ch10_dpo.py by scripts/make_exercises.py (stub d7251f1ca263): this is your file, fill in the stubs.
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
    # YOUR CODE HERE
    raise NotImplementedError()


def sequence_logprobs(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """log π(completion | prompt) per sequence: the sum over positions whose label is not -100 of
    log softmax(logits[b, t])[labels[b, t]], computed in float32. A sum, not a mean. Returns [B]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def dpo_loss(pc_P: torch.Tensor, pr_P: torch.Tensor, rc_P: torch.Tensor, rr_P: torch.Tensor, beta: float):
    """DPO for P pairs, from sequence log-probs of the chosen (c) and rejected (r) replies under the policy (p·) and
    the frozen reference (r·):

        chosen_rewards = β (pc − rc),  rejected_rewards = β (pr − rr),
        loss = mean −log σ(chosen_rewards − rejected_rewards)

    Return (loss, chosen_rewards, rejected_rewards); the two reward tensors [P] detached. Use F.logsigmoid."""
    # YOUR CODE HERE
    raise NotImplementedError()


def pick_pair(correct: list[bool], formatted: list[bool]):
    """Choose a preference pair among G sampled replies to one prompt, given which are correct and which are in the
    house format. Score each reply 2·correct + formatted (3 = the ideal reply). The chosen reply is the first one
    with score 3; the rejected one is the first reply among those with the highest score below 3 (the closest worse
    reply, so that the pair differs in as little as possible). Return (chosen index, rejected index), or None when
    there is no reply with score 3 or none below it."""
    # YOUR CODE HERE
    raise NotImplementedError()
