"""Extend it, chapter 10: DPO, IPO and SimPO on the same preference pairs, from the same RL model.

With s = Σ_t log π(y_t | x, y_<t) the sequence log-prob of a reply (chosen w, rejected l), |y| its token count, and
h = (s_θ(w) − s_ref(w)) − (s_θ(l) − s_ref(l)) the difference of log-ratios to the frozen reference:

    DPO   (Rafailov et al., 2023):  −log σ(β h)
    IPO   (Azar et al., 2023):      (h − 1/(2τ))²                         a squared loss: h is pulled to a target
    SimPO (Meng et al., 2024):      −log σ(β (s_θ(w)/|w| − s_θ(l)/|l|) − γ)   length-normalised, no reference

Pairs come from the course's RL model's own samples (`dpo.make_pairs`, as in the chapter). Each loss trains a fresh
copy of the RL model for the same steps and batches, with the course's NLL term on the chosen replies (weight
`DPOConfig.nll_coef`) so that only the preference term differs. It prints, on held-out questions, accuracy and format
rate, and the drift from the reference: the mean change per token of log π(chosen) and log π(rejected) on the
training pairs.

    python solutions/extend/ch10_preference_losses.py              # MINILLAMA4_PROFILE=ci for a short run
"""

import copy
import random

import torch
import torch.nn.functional as F

from minillama4.course import tasks
from minillama4.course.data import course_tokenizer
from minillama4.course.profile import by_profile
from minillama4.losses import dpo_loss
from minillama4.train import dpo, posttrain, seed_everything
from minillama4.train.pretrain import TrainConfig, make_optimizer, optimizer_step
from minillama4.train.rollout import evaluate, rollouts

TAU = 0.1  # IPO: the target log-ratio difference is 1/(2τ) = 5
SIMPO_BETA, SIMPO_GAMMA = 2.0, 1.0  # SimPO: scale of the per-token log-probs, target margin


def dpo_term(pc, pr, rc, rr, lengths_c, lengths_r, beta):
    return dpo_loss(pc, pr, rc, rr, beta)[0]  # mean −log σ(β h)


def ipo_term(pc, pr, rc, rr, lengths_c, lengths_r, beta):
    h = (pc - rc) - (pr - rr)  # difference of log-ratios to the reference
    return ((h - 1 / (2 * TAU)) ** 2).mean()  # (h − 1/(2τ))²


def simpo_term(pc, pr, rc, rr, lengths_c, lengths_r, beta):
    margin = SIMPO_BETA * (pc / lengths_c - pr / lengths_r) - SIMPO_GAMMA  # β (s̄_w − s̄_l) − γ, no reference
    return -F.logsigmoid(margin).mean()


LOSSES = {"DPO": dpo_term, "IPO": ipo_term, "SimPO": simpo_term}


def train_one(rl_model, pairs, ref_c, ref_r, term, cfg, steps: int, seed: int = 0):
    seed_everything(seed)
    model = copy.deepcopy(rl_model)
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=0.0))
    rng = random.Random(seed)  # the same batches for every loss
    len_c = torch.tensor([len(p.chosen_ids) for p in pairs], dtype=torch.float32)
    len_r = torch.tensor([len(p.rejected_ids) for p in pairs], dtype=torch.float32)
    model.train()
    for _ in range(steps):
        idx = rng.sample(range(len(pairs)), min(cfg.pairs_per_step, len(pairs)))
        batch = [pairs[i] for i in idx]
        pc, pr = dpo.pair_logps(model, batch)
        loss = term(pc, pr, ref_c[idx], ref_r[idx], len_c[idx], len_r[idx], cfg.beta)
        optimizer_step(opt, loss + cfg.nll_coef * dpo.chosen_nll(pc, batch), model, cfg.grad_clip)
    return model.eval(), len_c, len_r


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a toy model: one thread is faster than two that wait on each other
    try:
        run()
    finally:
        torch.set_num_threads(threads)


def run() -> None:
    seed_everything(0)
    tok = course_tokenizer()
    cfg = posttrain.recipe().dpo
    rl_model, _ = posttrain.stage("rl", progress=False)
    steps = by_profile(ci=30, laptop=60)
    train_qs = tasks.sample_tasks(by_profile(ci=80, laptop=200), seed=11)
    heldout = tasks.eval_set(by_profile(ci=10, laptop=25))
    pairs = dpo.make_pairs(rollouts(rl_model, tok, train_qs, n=cfg.samples_per_prompt, temperature=cfg.temperature,
                                    generator=torch.Generator().manual_seed(0)))
    if not pairs:
        raise RuntimeError("the RL model gave no preference pair on these prompts")
    with torch.no_grad():
        ref_c, ref_r = dpo.pair_logps(rl_model, pairs)
    base = evaluate(rl_model, tok, heldout)
    print(f"{len(pairs)} pairs ({sum(p.kind == 'format' for p in pairs)} format) from {len(train_qs)} prompts; "
          f"{steps} steps of {cfg.pairs_per_step} pairs; {len(heldout)} held-out questions")
    print(f"{'loss':6s} {'accuracy':>9s} {'format':>7s} {'Δ log π(chosen)/token':>22s} {'Δ log π(rejected)/token':>24s}")
    print(f"{'RL':6s} {base['accuracy']:9.3f} {base['format_rate']:7.3f} {0:22.3f} {0:24.3f}")
    for name, term in LOSSES.items():
        model, len_c, len_r = train_one(rl_model, pairs, ref_c, ref_r, term, cfg, steps)
        m = evaluate(model, tok, heldout)
        with torch.no_grad():
            pc, pr = dpo.pair_logps(model, pairs)
        dc = ((pc - ref_c).sum() / len_c.sum()).item()  # mean change per chosen token
        dr = ((pr - ref_r).sum() / len_r.sum()).item()
        print(f"{name:6s} {m['accuracy']:9.3f} {m['format_rate']:7.3f} {dc:22.3f} {dr:24.3f}")


if __name__ == "__main__":
    main()
