"""Chapter 10 cases: completion batches, sequence log-probs, the DPO loss and choosing preference pairs. Expected
values come from the package: `train.rollout.completion_batch`, `losses.sequence_logprobs`, `losses.dpo_loss`,
`train.dpo.make_pairs`."""

import torch

from ...losses import dpo_loss, sequence_logprobs
from ..tasks import Task
from ...train.dpo import make_pairs
from ...train.rollout import Rollout, completion_batch
from .core import Case, Exercise, register
from .core import seeded as _g


def _batch_cases():
    cases = []
    for seed, B in enumerate([3, 1, 5]):
        lens = torch.randint(1, 6, (B, 2), generator=_g(seed)).tolist()
        prompts = [torch.randint(1, 50, (p,), generator=_g(10 * seed + b)).tolist() for b, (p, _) in enumerate(lens)]
        comps = [torch.randint(1, 50, (c,), generator=_g(10 * seed + b + 5)).tolist() for b, (_, c) in enumerate(lens)]
        cases.append(Case((prompts, comps, 0), completion_batch(prompts, comps, 0)))
    return cases


def _seq_cases():
    cases = []
    for seed, (B, T, V) in enumerate([(2, 6, 9), (3, 4, 17), (1, 8, 5)]):
        logits = torch.randn(B, T, V, generator=_g(20 + seed)) * 2
        labels = torch.randint(0, V, (B, T), generator=_g(30 + seed))
        labels[:, : T // 2] = -100  # the prompt
        labels[-1, -1] = -100  # padding at the end of one row
        cases.append(Case((logits, labels), sequence_logprobs(logits, labels)))
    return cases


def _dpo_cases():
    cases = []
    for seed, (P, beta) in enumerate([(4, 0.1), (7, 0.5), (3, 2.0)]):
        pc, pr, rc, rr = (-torch.rand(P, generator=_g(40 + 4 * seed + i)) * 20 for i in range(4))
        cases.append(Case((pc, pr, rc, rr, beta), dpo_loss(pc, pr, rc, rr, beta)))
    same = -torch.rand(5, generator=_g(90)) * 10
    cases.append(Case((same, same, same, same, 0.1), dpo_loss(same, same, same, same, 0.1)))  # ln 2 at the start
    return cases


def _expected_pair(correct, formatted):
    task = Task("max", 1, "q", "1")
    rs = [Rollout(task, [0], [i], str(i), True, c, f) for i, (c, f) in enumerate(zip(correct, formatted))]
    pairs = make_pairs([rs])
    return (pairs[0].chosen_ids[0], pairs[0].rejected_ids[0]) if pairs else None


def _pair_cases():
    gen = _g(70)
    cases = []
    fixed = [([True, False, True], [False, True, True]), ([False, False], [True, False]), ([True, True], [True, True]),
             ([False, True, False, True], [False, True, True, False]), ([True, False, False], [True, True, False])]
    for _ in range(8):
        G = int(torch.randint(2, 7, (1,), generator=gen))
        fixed.append(((torch.rand(G, generator=gen) < 0.5).tolist(), (torch.rand(G, generator=gen) < 0.5).tolist()))
    for c, f in fixed:
        cases.append(Case((c, f), _expected_pair(c, f)))
    return cases


register(Exercise("completion_batch", 10, "completion_batch", _batch_cases,
                  "pad prompt + completion to the longest row; labels -100 except at the completion's positions; "
                  "return ids[:, :-1] and labels[:, 1:]", exact=True))
register(Exercise("sequence_logprobs", 10, "sequence_logprobs", _seq_cases,
                  "log_softmax in float32, gather at the labels (clamp -100 to a valid index first), zero the -100 "
                  "positions, then SUM over t (not mean)"))
register(Exercise("dpo_loss", 10, "dpo_loss", _dpo_cases,
                  "rewards are β·(policy − reference) for chosen and rejected; loss = mean of −logsigmoid(chosen − "
                  "rejected); at the start (policy = reference) the loss is ln 2"))
register(Exercise("pick_pair", 10, "pick_pair", _pair_cases,
                  "score = 2·correct + formatted; chosen = first index with score 3; rejected = first index with the "
                  "highest score below 3; None if either is missing"))
