"""Auxiliary-loss-free load balancing (DeepSeek-V3, arXiv 2412.19437), and how to measure balance.

Each MoE router keeps a per-expert bias b_E (`Router.selection_bias`) that is added to the logits for *choosing*
experts only; the scores that multiply the expert inputs still come from the raw logits. After every optimizer
step the bias moves by a fixed amount towards balance:

    load_e = number of (token, slot) assignments expert e received in this step's batch
    b_e   ← b_e + rate · sign(mean_e load − load_e)        (under-used experts up, over-used ones down)

No gradient, no extra loss term: the language-modelling gradient is left alone. DeepSeek-V3 uses rate = 0.001
over trillions of tokens; toy runs of a few hundred steps need a larger one. (torchtitan also centres Δb to mean
zero; that only shifts every logit by the same amount, which top-k ignores, so it is left out here.)

    balancer = AuxFreeBalancer(model, rate=0.01)
    train(model, train_ids, val_ids, cfg, on_step=balancer)      # cfg.balance_coef = 0: no auxiliary loss

Measures of balance, for `History.expert_load` entries or `viz.routing_load(routing)` ([L, E] token shares):
`load_imbalance` (max load / mean load, 1 = perfect, E = everything on one expert) and `max_violation`
(DeepSeek's MaxVio = (max load − mean load) / mean load = load_imbalance − 1).
"""

from __future__ import annotations

import torch
from torch import nn

from .router import Router, RouterOutput


def expert_counts(indices_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """How many (token, slot) assignments each expert received: indices [T, k] (or any shape) → counts [E]."""
    return torch.bincount(indices_TK.reshape(-1), minlength=num_experts)


def bias_update(bias_E: torch.Tensor, counts_E: torch.Tensor, rate: float) -> torch.Tensor:
    """One aux-loss-free step: b + rate · sign(mean(load) − load). Returns a new tensor (bias_E is not changed).
    An expert with exactly the mean load keeps its bias (sign 0)."""
    load_E = counts_E.to(torch.float32)
    delta_E = rate * torch.sign(load_E.mean() - load_E)  # +rate under-used, −rate over-used
    return bias_E + delta_E.to(bias_E.dtype)


def moe_routers(model: nn.Module) -> list[Router]:
    """The routers of a model's MoE layers, in layer order (the order of `model(ids, return_routing=True)[1]`)."""
    return [m for m in model.modules() if isinstance(m, Router)]


class AuxFreeBalancer:
    """`on_step` callback for `minillama4.train.train`: after each optimizer step, nudge every MoE router's
    `selection_bias` with `bias_update`, using the loads of that step's batch (`routing`, one RouterOutput per MoE
    layer). Keeps the bias of every step in `history` ([steps][MoE layer][expert]) when `record` is True."""

    def __init__(self, model: nn.Module, rate: float = 0.01, record: bool = True):
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.routers = moe_routers(model)
        if not self.routers:
            raise ValueError("the model has no MoE layer: nothing to balance")
        self.rate = rate
        self.record = record
        self.history: list[list[list[float]]] = []

    @torch.no_grad()
    def __call__(self, step: int, routing: list[RouterOutput]) -> None:
        if len(routing) != len(self.routers):
            raise ValueError(f"got routing for {len(routing)} MoE layers, the model has {len(self.routers)}")
        for router, r in zip(self.routers, routing):
            counts_E = expert_counts(r.indices, router.selection_bias.numel())
            router.selection_bias.copy_(bias_update(router.selection_bias, counts_E, self.rate))
        if self.record:
            self.history.append([router.selection_bias.tolist() for router in self.routers])

    def biases(self) -> torch.Tensor:
        """The current biases [MoE layer, E]."""
        return torch.stack([router.selection_bias.detach().cpu().clone() for router in self.routers])


def load_imbalance(load) -> torch.Tensor:
    """max load / mean load over the experts (last dim): 1.0 = perfectly balanced, E = all tokens on one expert.
    load: shares or counts [..., E] (tensor, array or nested list, e.g. `History.expert_load[-1]`) → [...]."""
    x = torch.as_tensor(load, dtype=torch.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"load must have an expert dimension, got shape {tuple(x.shape)}")
    return x.amax(-1) / x.mean(-1).clamp(min=1e-12)


def max_violation(load) -> torch.Tensor:
    """DeepSeek's MaxVio: (max load − mean load) / mean load over the experts (last dim); 0 = balanced."""
    return load_imbalance(load) - 1.0
