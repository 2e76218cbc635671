"""Training loops, one module per stage:

    pretrain.py   next-token pretraining on the course corpus (TrainConfig, train, evaluate, History)
    distill.py    distillation from a teacher: soft (T², KL) + hard targets on a schedule, codistillation
    rollout.py    chat prompts → sampled replies (KV cache), graded; held-out evaluation
    sft.py        supervised fine-tuning on the assistant's tokens, judge pruning of easy examples
    rl.py         online RL: groups, verifiable rewards, group advantages, clipped loss, zero-advantage filtering
    dpo.py        DPO on preference pairs from the model's own samples
    posttrain.py  the pipeline base → SFT → RL → DPO, cached stages, report.json (`minillama4 posttrain`)

Later stages (distillation, SFT, online RL, DPO) build on these pieces.
"""

from .pretrain import (History, TrainConfig, evaluate, get_batch, lm_loss, lr_at, make_optimizer, optimizer_step,
                       seed_everything, train)

__all__ = ["History", "TrainConfig", "evaluate", "get_batch", "lm_loss", "lr_at", "make_optimizer", "optimizer_step",
           "seed_everything", "train"]
