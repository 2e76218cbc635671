"""Extend it, chapter 02: top-1 vs top-2 routing, with and without a load-balancing loss, and the load per expert.

A tiny MoE language model predicts the next token of the course corpus from the previous one:

    h = RMSNorm(embed(token t-1));   h = h + MoE(h);   logits = head(RMSNorm(h))

with the package's `MoE` (router, shared expert, routed experts in the checkpoint layout, sparse dispatch). Four
runs share the initial weights stream and the batches: top-1 or top-2, and a Switch load-balancing loss
(`minillama4.losses.load_balancing_loss`, coefficient 0 or 0.01). After training it prints the validation loss and,
on the validation split, each expert's share of the routed assignments (uniform = 1/E each) and the max/min ratio.
Top-2 runs two routed experts per token: twice the routed compute of top-1.

    python solutions/extend/ch02_top2_load.py              # MINILLAMA4_PROFILE=ci for a short run
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile
from minillama4.losses import load_balancing_loss
from minillama4.moe import MoE
from minillama4.norm import RMSNorm
from minillama4.train import seed_everything

VOCAB, DIM, HIDDEN, EXPERTS = 512, 64, 128, 8
BATCH, LR, WARMUP = 1024, 3e-3, 20


class BigramMoE(nn.Module):
    """Next token from the previous one through one MoE block."""

    def __init__(self, top_k: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.norm_in, self.norm_out = RMSNorm(DIM), RMSNorm(DIM)
        self.moe = MoE(DIM, HIDDEN, EXPERTS, top_k)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, prev_N):
        h_ND = self.norm_in(self.embed(prev_N))
        out_ND, routing = self.moe(h_ND)
        return self.head(self.norm_out(h_ND + out_ND)), routing


def train_one(top_k: int, coef: float, steps: int, train_ids, val_ids, seed: int = 0) -> dict:
    seed_everything(seed)
    model = BigramMoE(top_k)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        pos_N = torch.randint(1, train_ids.numel(), (BATCH,), generator=g)
        logits_NV, routing = model(train_ids[pos_N - 1])
        loss = F.cross_entropy(logits_NV, train_ids[pos_N])
        if coef:
            loss = loss + coef * load_balancing_loss(routing.logits, top_k)  # E · Σ f_i P_i, 1.0 when uniform
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits_NV, routing = model(val_ids[:-1])
        val = F.cross_entropy(logits_NV, val_ids[1:]).item()
        load_E = torch.bincount(routing.indices.reshape(-1), minlength=EXPERTS).double()
        load_E /= load_E.sum()  # share of the routed assignments per expert
        balance = load_balancing_loss(routing.logits, top_k).item()
    return {"val": val, "load": load_E, "balance": balance}


def main() -> None:
    steps = by_profile(ci=150, laptop=600)
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    print(f"{EXPERTS} experts, D = {DIM}, F = {HIDDEN}, {steps} steps of {BATCH} tokens; uniform load = "
          f"{1 / EXPERTS:.3f} per expert")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these matmuls are too small to gain from more threads
    try:
        runs = {(k, c): train_one(k, c, steps, train_ids, val_ids) for k in (1, 2) for c in (0.0, 0.01)}
    finally:
        torch.set_num_threads(threads)
    print(f"{'routing':8s} {'balance coef':>12s} {'val loss':>9s} {'balance loss':>13s} {'max/min':>8s}  "
          "share of assignments per expert")
    for (k, c), r in runs.items():
        load = r["load"]
        ratio = f"{load.max() / load.min():8.1f}" if load.min() > 0 else "     inf"
        print(f"top-{k:<4d} {c:12.2f} {r['val']:9.4f} {r['balance']:13.3f} {ratio}  "
              + " ".join(f"{v:.3f}" for v in load.tolist()))


if __name__ == "__main__":
    main()
