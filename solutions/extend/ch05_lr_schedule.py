"""Extend it, chapter 05: the learning-rate schedule of the pretraining loop, changed one knob at a time.

Three runs of the chapter's loop (the package's pieces: get_batch, lm_loss, make_optimizer, lr_at), from the same
initial weights on the same batches, differing only in the schedule:

    recipe          linear warm-up over the first steps, then cosine decay (the mini-scout recipe's shape)
    no warm-up      the peak learning rate from the very first step
    3× peak         the same warm-up and cosine, to a peak three times higher

It prints the training loss and the gradient norm (before clipping) at a few steps, and the validation loss at the
end. Smaller batches than the recipe (8 × 64 tokens) keep it quick.

    python solutions/extend/ch05_lr_schedule.py      # MINILLAMA4_PROFILE=ci for a short run
"""

from dataclasses import replace

import torch

from minillama4 import Llama4
from minillama4.course import zoo
from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile
from minillama4.train import seed_everything
from minillama4.train.pretrain import evaluate, get_batch, lm_loss, lr_at, make_optimizer


def run(cfg, tc, train_ids, val_ids) -> dict:
    seed_everything(tc.seed)
    model = Llama4(cfg).train()
    opt = make_optimizer(model, tc)
    g = torch.Generator().manual_seed(tc.seed)
    losses, norms = [], []
    for step in range(tc.steps):
        x, y = get_batch(train_ids, tc.batch_size, tc.seq_len, g)
        loss, ce, _ = lm_loss(model, x, y, tc)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip).item())  # norm before clipping
        opt.step()
        losses.append(ce.item())
    val, _ = evaluate(model, val_ids, tc)
    return {"loss": losses, "norm": norms, "val": val}


def main() -> None:
    recipe = zoo.recipes()["mini-scout"]
    steps = by_profile(ci=40, laptop=150)
    base = replace(recipe.train, steps=steps, batch_size=8, seq_len=64, warmup_steps=steps // 5, eval_batches=4)
    runs = {"recipe": base, "no warm-up": replace(base, warmup_steps=0),
            "3× peak": replace(base, lr=3 * base.lr, min_lr=3 * base.min_lr)}
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    at = sorted({1, 2, 3, 5, steps // 4, steps // 2, steps})
    print(f"{steps} steps of {base.batch_size} × {base.seq_len} tokens; peak lr {base.lr:g}, warm-up "
          f"{base.warmup_steps} steps, then cosine to {base.min_lr:g}")
    results = {name: run(recipe.config, tc, train_ids, val_ids) for name, tc in runs.items()}
    print(f"{'':11s}" + "".join(f"{'step ' + str(s):>14s}" for s in at) + f"{'validation':>12s}")
    for name, r in results.items():
        print(f"{name:11s}" + "".join(f"{r['loss'][s - 1]:7.2f} ({r['norm'][s - 1]:4.1f})" for s in at)
              + f"{r['val']:12.3f}")
    print("each cell: training loss (gradient norm before clipping)")


if __name__ == "__main__":
    main()
