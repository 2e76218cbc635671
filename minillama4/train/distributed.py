"""Pretraining on several processes: data parallel over the batch, expert parallel over the experts.

    minillama4 pretrain --steps 200 --out runs/one                                  one process
    torchrun --nproc-per-node 4 -m minillama4 pretrain --steps 200 --out runs/ep4   4 processes (gloo; nccl on GPUs)

Every rank builds the same model from the same seed and keeps only its E/N experts of each MoE layer
(`parallel.shard_model`, tokens="own"); DDP keeps the replicated weights in step (`parallel.data_parallel`). Every
rank draws the same global batch of B sequences and trains on its own B/N of them (`parallel.this_ranks_rows`);
the rows of all ranks meet at the experts through the all-to-all. At equal global batch this is the one-process
run up to the order of floating-point sums, with one difference: each rank computes the load-balancing loss from
its own tokens' routing, not from the whole batch's, so with balance_coef > 0 the objective differs slightly
(`bench/expert_parallel.py --train-steps` measures both).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from ..model import Llama4
from ..parallel import data_parallel, shard_model
from .pretrain import History, TrainConfig, seed_everything, train


def train_parallel(model: Llama4, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: TrainConfig,
                   progress: bool = True, desc: str = "training") -> History:
    """`pretrain.train` on every rank of the initialised process group, data + expert parallel: this rank keeps
    its experts of `model` (built the same on every rank) and trains on its B/N rows of each batch. The history's
    train losses are the whole batch's (the mean over the ranks); validation losses are the same on every rank."""
    N = dist.get_world_size()
    model = data_parallel(shard_model(model, "expert", tokens="own"))
    hist = train(model, train_ids, val_ids, cfg, progress=progress and dist.get_rank() == 0, desc=desc)
    losses = torch.tensor(hist.train_loss, dtype=torch.float64)
    dist.all_reduce(losses)  # each rank saw B/N rows: the batch's loss is the mean of the ranks' (equal row counts)
    hist.train_loss = (losses / N).tolist()
    return hist


def pretrain(recipe: str = "mini-scout", steps: int | None = None, profile: str | None = None,
             progress: bool = True) -> History:
    """Train a toy recipe (`course.zoo`) on the course corpus: on this process, or data + expert parallel on the
    ranks of an initialised process group of N > 1 processes."""
    from ..course.data import course_tokens
    from ..course.zoo import recipes

    all_recipes = recipes(profile)
    if recipe not in all_recipes:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(all_recipes)}")
    r = all_recipes[recipe]
    tc = r.train if steps is None else dataclasses.replace(r.train, steps=steps)
    train_ids = course_tokens("train", vocab_size=r.config.vocab_size).ids
    val_ids = course_tokens("val", vocab_size=r.config.vocab_size).ids
    seed_everything(tc.seed)
    model = Llama4(r.config)
    if dist.is_initialized() and dist.get_world_size() > 1:
        return train_parallel(model, train_ids, val_ids, tc, progress, recipe)
    return train(model, train_ids, val_ids, tc, progress=progress, desc=recipe)
