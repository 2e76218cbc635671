"""Extend it, chapter 08: when should the model judge itself?

SFT from the pretrained mini-scout on the whole pool, as in the package's run, and every `every` steps the model in
training scores a fixed sample of the pool (`sft.judge_scores`: the answer's negative log-likelihood) and prunes it
(`sft.prune_easy`, keeping the hardest half). For each judge it prints the mean score, the share of each level it
keeps, and how far it agrees with the previous judge: the rank correlation of the scores and the overlap of the kept
sets. Step 0 is the base model, which has never seen a chat.

    python solutions/extend/ch08_judge_timing.py              # MINILLAMA4_PROFILE=ci for a short run
"""

import torch

from minillama4.course import tasks
from minillama4.course.data import course_tokenizer
from minillama4.course.profile import by_profile
from minillama4.train import TrainConfig, make_optimizer, optimizer_step, posttrain, seed_everything, sft
from minillama4.train.rollout import pad_batch


def ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort().argsort().float()


def main() -> None:
    cfg = posttrain.recipe().sft
    steps, every = by_profile(ci=40, laptop=150), by_profile(ci=10, laptop=25)
    sample_size = by_profile(ci=150, laptop=1000)
    tok = course_tokenizer()
    model, _ = posttrain.stage("base", progress=False)
    seed_everything(cfg.seed)
    pool = tasks.sample_tasks(cfg.pool_size, seed=cfg.seed, kinds=cfg.kinds)
    examples = sft.make_examples(pool, tok, cfg.canonical_fraction, cfg.seed + 1)
    sample = pool[:sample_size]  # the fixed sample every judge scores
    levels = torch.tensor([t.level for t in sample])
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
    g = torch.Generator().manual_seed(cfg.seed)

    print(f"judges of {sample_size} pool examples, keeping the hardest {cfg.keep_fraction:.0%}")
    print(f"{'step':>5} {'mean NLL':>9}   kept share L1 / L2 / L3   {'rank corr.':>10} {'kept overlap':>12}")
    prev_scores, prev_kept = None, None
    for step in range(steps + 1):
        if step % every == 0:
            scores = sft.judge_scores(model, tok, sample)
            kept = set(sft.prune_easy(list(range(sample_size)), scores, cfg.keep_fraction))
            kept_mask = torch.tensor([i in kept for i in range(sample_size)])
            share = " / ".join(f"{kept_mask[levels == lv].float().mean():.2f}" for lv in tasks.LEVELS)
            corr = overlap = float("nan")
            if prev_scores is not None:
                corr = torch.corrcoef(torch.stack([ranks(scores), ranks(prev_scores)]))[0, 1].item()
                overlap = len(kept & prev_kept) / len(kept)
            print(f"{step:>5} {scores.mean():>9.2f}   {share:>24}   {corr:>10.2f} {overlap:>12.2f}")
            prev_scores, prev_kept = scores, kept
        if step == steps:
            break
        model.train()
        pick = torch.randint(0, len(examples), (cfg.batch_size,), generator=g).tolist()
        ids, labels = pad_batch([examples[i][0] for i in pick], [examples[i][1] for i in pick])
        optimizer_step(opt, sft.sft_loss(model, ids, labels), model, cfg.grad_clip, lr=sft._lr(step, cfg))
    print(f"(the package's run judges once, at step {cfg.judge_at} of {cfg.steps})")


if __name__ == "__main__":
    main()
