"""Chapter 10 cases: completion batches, sequence log-probs, the DPO loss and choosing preference pairs. Expected
values come from the package: `train.rollout.completion_batch`, `losses.sequence_logprobs`, `losses.dpo_loss`,
`train.dpo.make_pairs`."""

import torch
import torch.nn.functional as F

from ...losses import dpo_loss, sequence_logprobs
from ..tasks import Task
from ...train.dpo import make_pairs
from ...train.rollout import Rollout, completion_batch
from .core import TOLERANCE, Case, Exercise, Mistake, register
from .core import seeded as _g


def _batch_cases():
    cases = []
    for seed, B in enumerate([3, 1, 5]):
        lens = torch.randint(1, 6, (B, 2), generator=_g(seed)).tolist()
        prompts = [torch.randint(1, 50, (p,), generator=_g(10 * seed + b)).tolist() for b, (p, _) in enumerate(lens)]
        comps = [torch.randint(1, 50, (c,), generator=_g(10 * seed + b + 5)).tolist() for b, (_, c) in enumerate(lens)]
        cases.append(Case((prompts, comps, 0), completion_batch(prompts, comps, 0)))
    return cases


def _seq_case(seed: int, B: int, T: int, V: int, scale: float = 2.0, dtype=torch.float32):
    logits = (torch.randn(B, T, V, generator=_g(20 + seed)) * scale).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=_g(30 + seed))
    labels[:, : T // 2] = -100  # the prompt
    labels[-1, -1] = -100  # padding at the end of one row
    return logits, labels


def _seq_cases():
    cases = []
    for seed, (B, T, V) in enumerate([(2, 6, 9), (3, 4, 17), (1, 8, 5)]):
        logits, labels = _seq_case(seed, B, T, V)
        cases.append(Case((logits, labels), sequence_logprobs(logits, labels)))
    # bfloat16 logits over a larger vocabulary: the log-probs must still be computed in float32. With this seed a
    # bfloat16 log-softmax is off by over 10 times the tolerance in some row (tests/mistakes/wrong_ch10.py holds such
    # a version, which must fail here)
    logits, labels = _seq_case(303, 2, 8, 300, 4.0, torch.bfloat16)
    cases.append(Case((logits, labels), sequence_logprobs(logits, labels)))
    return cases


def _dpo_cases():
    cases = []
    for seed, (P, beta) in enumerate([(4, 0.1), (7, 0.5), (3, 2.0)]):
        pc, pr, rc, rr = (-torch.rand(P, generator=_g(40 + 4 * seed + i)) * 20 for i in range(4))
        cases.append(Case((pc, pr, rc, rr, beta), _dpo_probe(dpo_loss, pc, pr, rc, rr, beta)))
    same = -torch.rand(5, generator=_g(90)) * 10
    cases.append(Case((same, same, same, same, 0.1), _dpo_probe(dpo_loss, same, same, same, same, 0.1)))  # ln 2
    return cases


def _dpo_probe(fn, pc, pr, rc, rr, beta):
    """(loss, chosen rewards, rejected rewards, whether both rewards come back detached, whether the loss has a
    gradient to the policy's log-probs)."""
    pc, pr = (t.clone().requires_grad_(True) for t in (pc, pr))
    out = fn(pc, pr, rc, rr, beta)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return out
    loss, chosen, rejected = out
    detached = not any(isinstance(t, torch.Tensor) and t.requires_grad for t in (chosen, rejected))
    has_grad = isinstance(loss, torch.Tensor) and loss.requires_grad
    return tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in out) + (detached, has_grad)


def _expected_pair(correct, formatted):
    task = Task("max", 1, "q", "1")
    rs = [Rollout(task, [0], [i], str(i), True, c, f) for i, (c, f) in enumerate(zip(correct, formatted))]
    pairs = make_pairs([rs])
    return (pairs[0].chosen_ids[0], pairs[0].rejected_ids[0]) if pairs else None


def _pair_cases():
    gen = _g(70)
    cases = []
    # the first two tell the wrong rules for the rejected reply apart: [correct only, neither, formatted only, ideal]
    # and [formatted only, neither, correct only, ideal]
    fixed = [([True, False, False, True], [False, False, True, True]),
             ([False, False, True, True], [True, False, False, True]),
             ([True, False, True], [False, True, True]), ([False, False], [True, False]), ([True, True], [True, True]),
             ([False, True, False, True], [False, True, True, False]), ([True, False, False], [True, True, False])]
    for _ in range(8):
        G = int(torch.randint(2, 7, (1,), generator=gen))
        fixed.append(((torch.rand(G, generator=gen) < 0.5).tolist(), (torch.rand(G, generator=gen) < 0.5).tolist()))
    for c, f in fixed:
        cases.append(Case((c, f), _expected_pair(c, f)))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch10.py holds independently written wrong learner files for each of them.
def _padded(prompts, completions, pad_id, left=False):
    """Rows prompt + completion padded to the longest, and the completion mask, [B, L]."""
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    comp = torch.zeros(len(prompts), L, dtype=torch.bool)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        n = len(p) + len(c)
        at = L - n if left else 0
        ids[b, at:at + n] = torch.tensor(p + c, dtype=torch.long)
        comp[b, at + len(p):at + n] = True
    return ids, comp


def _batch_prompt_scored(prompts, completions, pad_id=0):
    ids, comp = _padded(prompts, completions, pad_id)
    real = torch.zeros_like(comp)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        real[b, :len(p) + len(c)] = True
    return ids[:, :-1], torch.where(real, ids, -100)[:, 1:]


def _batch_all_scored(prompts, completions, pad_id=0):
    ids, _ = _padded(prompts, completions, pad_id)
    return ids[:, :-1], ids[:, 1:]


def _batch_unshifted(prompts, completions, pad_id=0):
    ids, comp = _padded(prompts, completions, pad_id)
    return ids[:, :-1], torch.where(comp, ids, -100)[:, :-1]


def _batch_backwards(prompts, completions, pad_id=0):
    ids, comp = _padded(prompts, completions, pad_id)
    return ids[:, 1:], torch.where(comp, ids, -100)[:, :-1]


def _batch_mask_of_input(prompts, completions, pad_id=0):
    ids, comp = _padded(prompts, completions, pad_id)
    return ids[:, :-1], torch.where(comp[:, :-1], ids[:, 1:], -100)


def _batch_left_padded(prompts, completions, pad_id=0):
    ids, comp = _padded(prompts, completions, pad_id, left=True)
    return ids[:, :-1], torch.where(comp, ids, -100)[:, 1:]


def _full_length(case, got) -> bool:
    prompts, completions, _ = case.args
    L = max(len(p) + len(c) for p, c in zip(prompts, completions))
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(
        isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == L for t in got)


def _token_logprobs(logits, labels, dim=-1):
    lp = logits.float().log_softmax(dim).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return lp, labels != -100


def _seq_not_zeroed(logits, labels):
    return _token_logprobs(logits, labels)[0].sum(-1)


def _seq_probabilities(logits, labels):
    p = logits.float().softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (p * (labels != -100)).sum(-1)


def _seq_wrong_dim(logits, labels):
    lp, keep = _token_logprobs(logits, labels, dim=1)
    return (lp * keep).sum(-1)


def _seq_mean(case, got) -> bool:
    """A mean over the counted tokens, or over all T positions, instead of the sum."""
    logits, labels = case.args
    keep = labels != -100
    if not isinstance(got, torch.Tensor) or got.shape != case.expected.shape:
        return False
    return any(torch.allclose(got.float() * n, case.expected, **TOLERANCE)
               for n in (keep.sum(-1).float(), torch.full_like(case.expected, labels.shape[-1])))


def _negated(case, got) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == case.expected.shape and got.is_floating_point() and \
        torch.allclose(got.float(), -case.expected, **TOLERANCE)


def _not_float32(case, got) -> bool:
    """Every float32 case passed; the bfloat16 one does not: computed in the logits' dtype."""
    return case.args[0].dtype == torch.bfloat16


def _dpo(reward=lambda p, r, beta: beta * (p - r), margin_sign=1.0, loss_sign=-1.0, reduce=torch.mean,
         loss_beta=None):
    """DPO with one thing changed: how the implicit rewards are formed, the sign inside or outside the log-sigmoid,
    the reduction over pairs, or the β of the loss (when it differs from the rewards')."""
    def wrong(pc, pr, rc, rr, beta):
        chosen, rejected = reward(pc.float(), rc.float(), beta), reward(pr.float(), rr.float(), beta)
        margin = chosen - rejected if loss_beta is None else loss_beta(beta) * ((pc - rc) - (pr - rr))
        loss = loss_sign * reduce(F.logsigmoid(margin_sign * margin))
        return loss, chosen.detach(), rejected.detach()
    return wrong


def _score(c, f, wc=2, wf=1):
    return [wc * bool(x) + wf * bool(y) for x, y in zip(c, f)]


def _pick(rejected_rule, weights=(2, 1)):
    """pick_pair with one rule changed: which reply is rejected, or the weights of the score."""
    def wrong(correct, formatted):
        scores = _score(correct, formatted, *weights)
        below = [i for i, s in enumerate(scores) if s < 3]
        if 3 not in scores or not below:
            return None
        return scores.index(3), rejected_rule(scores, below)
    return wrong


def _chosen_not_ideal(case, got) -> bool:
    """A pair where there is none: its chosen reply is not ideal (score below 3)."""
    if case.expected is not None or not isinstance(got, (tuple, list)) or len(got) != 2 or None in got:
        return False
    return _score(*case.args)[int(got[0])] < 3


def _closest(scores, below):
    return next(i for i in below if scores[i] == max(scores[j] for j in below))


def _not_first(case, got) -> bool:
    """A valid pair (an ideal reply, and a reply with the highest score below 3), but not the first of each."""
    if case.expected is None or not isinstance(got, (tuple, list)) or len(got) != 2:
        return False
    scores = _score(*case.args)
    c, r = (int(i) for i in got)
    return scores[c] == 3 and scores[r] == max(s for s in scores if s < 3) and (c, r) != tuple(case.expected)


def _worst(scores, below):
    return scores.index(min(scores))


def _first_below(scores, below):
    return below[0]


def _correct_vs_wrong(correct, formatted):
    right = [i for i, c in enumerate(correct) if c]
    wrong = [i for i, c in enumerate(correct) if not c]
    return (right[0], wrong[0]) if right and wrong else None


register(Exercise(
    "completion_batch", 10, "completion_batch", _batch_cases,
    "pad prompt + completion to the longest row; labels -100 except at the completion's positions; "
    "return ids[:, :-1] and labels[:, 1:]", exact=True,
    nudge="Build the padded rows and, beside them, a same-shaped row of labels that is -100 wherever the token is not "
          "a completion token. Then shift: which column do the inputs lose, and which the labels?",
    mistakes=[
        Mistake("you returned full-length rows: inputs drop the last column (ids[:, :-1]) and labels the first "
                "(labels[:, 1:]), so that labels[:, t] is the token after inputs[:, t]", test=_full_length),
        Mistake("your labels score the prompt: only completion tokens get a label, the prompt and the padding are "
                "-100", wrong=_batch_prompt_scored),
        Mistake("your labels are the whole shifted rows: the prompt and the padding must be -100, only completion "
                "tokens are scored", wrong=_batch_all_scored),
        Mistake("your labels are not shifted: labels[:, t] must be the token AFTER inputs[:, t], so labels = the "
                "masked rows[:, 1:]", wrong=_batch_unshifted),
        Mistake("you shifted the wrong way: inputs = rows[:, :-1] and labels = masked rows[:, 1:] (the next token)",
                wrong=_batch_backwards),
        Mistake("your mask follows the input position: the label at t is token t+1, kept when token t+1 is a "
                "completion token; build the -100 labels on the padded rows first, then shift",
                wrong=_batch_mask_of_input),
        Mistake("pad on the right: row b starts at column 0 with its prompt, then its completion, then pad_id",
                wrong=_batch_left_padded),
    ]))
register(Exercise(
    "sequence_logprobs", 10, "sequence_logprobs", _seq_cases,
    "log_softmax in float32, gather at the labels (clamp -100 to a valid index first), zero the -100 "
    "positions, then SUM over t (not mean)",
    nudge="log π(completion) is a product of token probabilities, so a sum of token log-probs: over which positions, "
          "and what do you gather at a position whose label is -100?",
    mistakes=[
        Mistake("gather cannot use the label -100: clamp the labels to a valid index first (labels.clamp(min=0)), "
                "then zero those positions", raises=r"index -100 is out of bounds"),
        Mistake("return one log-prob per sequence, [B]: sum over the positions t",
                test=lambda case, got: isinstance(got, torch.Tensor) and got.shape == case.args[1].shape),
        Mistake("that is a mean: log π(completion | prompt) is the SUM of the token log-probs",
                test=_seq_mean),
        Mistake("the sign is flipped: that is the negative log-likelihood (cross-entropy); the log-prob is "
                "log_softmax gathered at the labels, a negative number", test=_negated),
        Mistake("the -100 positions were counted: after gathering at a clamped index, zero those positions (they "
                "are the prompt and padding)", wrong=_seq_not_zeroed),
        Mistake("you summed probabilities: take log_softmax, then gather and sum the LOG-probabilities",
                wrong=_seq_probabilities),
        Mistake("the softmax runs over the vocabulary, the last dim (log_softmax(-1)), not over the positions",
                wrong=_seq_wrong_dim),
        Mistake("compute in float32 (logits.float() before log_softmax): bfloat16 keeps about three significant "
                "digits, too few for log-probabilities", test=_not_float32),
    ]))
register(Exercise(
    "dpo_loss", 10, "dpo_loss", _dpo_cases,
    "rewards are β·(policy − reference) for chosen and rejected; loss = mean of −logsigmoid(chosen − "
    "rejected); at the start (policy = reference) the loss is ln 2",
    probe=_dpo_probe,
    nudge="An implicit reward compares the policy with the reference on the same reply, scaled by β. The loss is a "
          "logistic loss that wants the chosen reward above the rejected one: check its value when the policy is "
          "the reference.",
    mistakes=[
        Mistake("return three things: (loss, chosen_rewards, rejected_rewards)",
                test=lambda case, got: not (isinstance(got, tuple) and len(got) == 5)),
        Mistake("the loss has no gradient (detached, or a Python number): compute it from the policy's log-probs "
                "with torch operations; detach only the rewards you return",
                test=lambda case, got: len(got) == 5 and got[4] is False),
        Mistake("the returned rewards still carry a gradient: return chosen_rewards.detach() and "
                "rejected_rewards.detach() (they are for logging)",
                test=lambda case, got: len(got) == 5 and got[3] is False),
        Mistake("the sign is flipped: the loss is −log σ(chosen − rejected), small when the chosen reward is the "
                "larger one", wrong=_dpo(margin_sign=-1.0)),
        Mistake("you forgot the minus: −log σ(margin) is the loss (positive, ln 2 at the start), log σ is its "
                "negative", wrong=_dpo(loss_sign=1.0)),
        Mistake("the implicit reward is β·(policy − reference): you subtracted the policy from the reference",
                wrong=_dpo(reward=lambda p, r, beta: beta * (r - p))),
        Mistake("you left β out: the rewards are β·(policy − reference) and the loss is −log σ of their difference",
                wrong=_dpo(reward=lambda p, r, beta: p - r)),
        Mistake("your loss is right but the rewards lack β: chosen_rewards = β·(pc − rc), rejected_rewards = "
                "β·(pr − rr)", wrong=_dpo(reward=lambda p, r, beta: p - r, loss_beta=lambda beta: beta)),
        Mistake("your rewards use the policy alone: the implicit reward compares it with the reference, "
                "β·(policy − reference)", wrong=_dpo(reward=lambda p, r, beta: beta * p)),
        Mistake("that is the sum over pairs: the loss is the MEAN of −log σ(...)", wrong=_dpo(reduce=torch.sum)),
    ]))
register(Exercise(
    "pick_pair", 10, "pick_pair", _pair_cases,
    "score = 2·correct + formatted; chosen = first index with score 3; rejected = first index with the "
    "highest score below 3; None if either is missing",
    nudge="Score every reply first (2·correct + formatted). Which score must the chosen reply have, which of the "
          "lower-scoring replies makes the closest pair, and when is there no pair at all?",
    mistakes=[
        Mistake("when there is no pair, return None itself, not (None, None)",
                test=lambda case, got: case.expected is None and isinstance(got, (tuple, list))
                and all(x is None for x in got)),
        Mistake("the chosen reply must be ideal (correct AND formatted, score 3): with none, there is no pair",
                test=_chosen_not_ideal),
        Mistake("you paired a correct reply with a wrong one: the chosen reply is correct AND formatted, the "
                "rejected one the best-scoring reply below it", wrong=_correct_vs_wrong),
        Mistake("the rejected reply is the CLOSEST worse one (the highest score below 3), not the worst",
                wrong=_pick(_worst)),
        Mistake("the rejected reply is the one with the highest score below 3, not simply the first reply below 3",
                wrong=_pick(_first_below)),
        Mistake("correctness weighs more than format: score = 2·correct + formatted, so a correct reply in the "
                "wrong style beats a well-formatted wrong one", wrong=_pick(_closest, weights=(1, 2))),
        Mistake("take the FIRST reply with each score (scores.index(...)), not the last",
                test=_not_first),
    ]))
