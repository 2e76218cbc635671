"""Training loops, one module per stage:

    pretrain.py   next-token pretraining on the course corpus (TrainConfig, train, evaluate, History)

Later stages (distillation, SFT, online RL, DPO) build on these pieces.
"""

from .pretrain import (History, TrainConfig, evaluate, get_batch, lm_loss, lr_at, make_optimizer, seed_everything,
                       train)

__all__ = ["History", "TrainConfig", "evaluate", "get_batch", "lm_loss", "lr_at", "make_optimizer", "seed_everything",
           "train"]
