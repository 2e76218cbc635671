"""Extend it, chapter 01: which gate matters? GLU variants at equal parameters.

Chapter 01's experiment (next-token prediction on the course corpus with a small attention-free model whose FFN
blocks do most of the work), with the FFN kind varied over the gated units of Shazeer (2020):

    ReGLU     (relu(x W_gate) ⊙ x W_up) W_down
    GEGLU     (gelu(x W_gate) ⊙ x W_up) W_down
    SwiGLU    (silu(x W_gate) ⊙ x W_up) W_down          Llama 4's
    bilinear  ((x W_gate) ⊙ x W_up) W_down              no nonlinearity in the gate
    ReLU      relu(x W_1) W_2                            the two-matrix baseline, hidden width F

Every gated kind has three matrices of width 2F/3, so every model has the same number of parameters; every kind
sees the same initial weight stream and the same batches. Prints the final validation loss per kind and seed.

    python solutions/extend/ch01_glu_variants.py           # MINILLAMA4_PROFILE=ci for a short run
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile
from minillama4.norm import RMSNorm
from minillama4.train import seed_everything

VOCAB, DIM, HIDDEN, CONTEXT, BLOCKS = 512, 96, 288, 6, 2
BATCH, LR, WARMUP = 256, 3e-3, 30
GATES = {"ReGLU": F.relu, "GEGLU": F.gelu, "SwiGLU": F.silu, "bilinear": lambda a: a}


class GatedFFN(nn.Module):
    """(gate(x W_gate) ⊙ x W_up) W_down with three matrices of width `hidden`."""

    def __init__(self, dim: int, hidden: int, gate):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)
        self.gate = gate

    def forward(self, x_ND):
        return self.w_down(self.gate(self.w_gate(x_ND)) * self.w_up(x_ND))


class ReLUFFN(nn.Module):
    """relu(x W_1) W_2 with two matrices of width `hidden`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x_ND):
        return self.down(F.relu(self.up(x_ND)))


def make_ffn(kind: str) -> nn.Module:
    return ReLUFFN(DIM, HIDDEN) if kind == "ReLU" else GatedFFN(DIM, 2 * HIDDEN // 3, GATES[kind])


class NextTokenMLP(nn.Module):
    """Token t from tokens t-K … t-1: concatenated embeddings → linear mix → pre-norm residual FFN blocks → head."""

    def __init__(self, kind: str):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.mix = nn.Linear(CONTEXT * DIM, DIM, bias=False)
        self.norms = nn.ModuleList(RMSNorm(DIM) for _ in range(BLOCKS))
        self.ffns = nn.ModuleList(make_ffn(kind) for _ in range(BLOCKS))
        self.norm = RMSNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ctx_NK):
        h_ND = self.mix(self.embed(ctx_NK).flatten(1))
        for norm, ffn in zip(self.norms, self.ffns):
            h_ND = h_ND + ffn(norm(h_ND))
        return self.head(self.norm(h_ND))


def contexts(ids: torch.Tensor, positions: torch.Tensor):
    return ids[positions[:, None] + torch.arange(-CONTEXT, 0)], ids[positions]


def train_one(kind: str, seed: int, steps: int, train_ids, val_all) -> float:
    seed_everything(seed)
    model = NextTokenMLP(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        x_NK, y_N = contexts(train_ids, torch.randint(CONTEXT, train_ids.numel(), (BATCH,), generator=g))
        loss = F.cross_entropy(model(x_NK), y_N)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return F.cross_entropy(model(val_all[0]), val_all[1]).item()


def main() -> None:
    steps = by_profile(ci=120, laptop=600)
    seeds = by_profile(ci=(0,), laptop=(0, 1, 2))
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    val_all = contexts(val_ids, torch.arange(CONTEXT, val_ids.numel()))
    kinds = ["ReLU", *GATES]
    counts = {k: sum(p.numel() for p in NextTokenMLP(k).ffns.parameters()) for k in kinds}
    assert len(set(counts.values())) == 1, counts  # equal FFN parameters
    print(f"{len(kinds)} FFN kinds with {counts['ReLU']:,} FFN parameters each; {steps} steps, seeds {list(seeds)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these matmuls are too small to gain from more threads
    try:
        results = {k: [train_one(k, s, steps, train_ids, val_all) for s in seeds] for k in kinds}
    finally:
        torch.set_num_threads(threads)
    print("final validation loss (nats/token), mean over seeds, best first")
    for k in sorted(kinds, key=lambda k: sum(results[k]) / len(seeds)):
        vals = results[k]
        print(f"  {k:9s} {sum(vals) / len(vals):.4f}   per seed: " + ", ".join(f"{v:.4f}" for v in vals))


if __name__ == "__main__":
    main()
