"""Extend it, chapter 14: delayed scaling instead of current scaling in FP8 training.

Current scaling (the package's `fp8.fp8_matmul`) takes each operand's scale from its own amax at this step:
s = amax(t) / FP8_MAX, so nothing ever saturates. Delayed scaling (Transformer Engine's default recipe) takes it from
the largest amax of the last H steps instead, s = max(history) / FP8_MAX, and records this step's amax for the next
ones: on a GPU the amax is then computed inside the cast kernel, with no extra pass over the tensor. A value that
grew past the history saturates at ±FP8_MAX. (Here the amax is read with an ordinary reduction: only the numbers
are simulated, not the saving.)

A small next-token model (the previous CONTEXT tokens' embeddings → a linear mix → residual MLP blocks → head) is
trained three ways from the same weights on the same batches: float32, FP8 with current scaling, FP8 with delayed
scaling. The linears of the blocks and the mix run in FP8 (e4m3 forward, e5m2 gradients, float32 master weights);
embeddings and head stay float32. Prints the final validation loss of each and, for delayed scaling, the share of
values that saturated per operand.

    python solutions/extend/ch14_delayed_scaling.py       # MINILLAMA4_PROFILE=ci for a short run
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from minillama4 import fp8
from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile
from minillama4.fp8 import AMAX_FLOOR, E4M3, E5M2, FP8_MAX, saturate_cast, scaled_mm
from minillama4.norm import RMSNorm
from minillama4.train import seed_everything

VOCAB, DIM, HIDDEN, CONTEXT, BLOCKS = 512, 64, 256, 4, 2
BATCH, LR, WARMUP, HISTORY = 256, 3e-3, 20, 16


class AmaxHistory:
    """The amax of one operand over the last `length` steps, and what its delayed scale made saturate."""

    def __init__(self, length: int):
        self.length, self.values, self.seen, self.saturated = length, [], 0, 0

    def scale(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """s [1, 1] from the history (this step's amax when it is empty), then this step's amax is recorded."""
        now = t.detach().abs().max().item()
        amax = max(self.values) if self.values else now  # delayed: the past steps only
        self.values = (self.values + [now])[-self.length:]
        s = torch.tensor([[max(amax, AMAX_FLOOR) / FP8_MAX[dtype]]])
        self.seen += t.numel()
        self.saturated += int((t.detach().abs() > FP8_MAX[dtype] * s).sum())
        return s


class DelayedFp8Matmul(torch.autograd.Function):
    """y = x Wᵀ in FP8 as `fp8.Fp8Matmul`, with each scale from an amax history instead of the tensor itself."""

    @staticmethod
    def forward(ctx, x_MK, w_NK, hist: dict):
        sx, sw = hist["x"].scale(x_MK, E4M3), hist["w"].scale(w_NK, E4M3)
        xq, wq = saturate_cast(x_MK / sx, E4M3), saturate_cast(w_NK / sw, E4M3)  # q = sat(t / s)
        ctx.save_for_backward(xq, sx, wq, sw)
        ctx.hist = hist
        return scaled_mm(xq, sx, wq, sw)

    @staticmethod
    def backward(ctx, g_MN):
        xq, sx, wq, sw = ctx.saved_tensors
        sg = ctx.hist["grad"].scale(g_MN, E5M2)
        gq = saturate_cast(g_MN / sg, E5M2)
        grad_x = scaled_mm(gq, sg, wq.t(), sw)  # ∂x = ĝ Ŵ
        grad_w = scaled_mm(gq.t(), sg, xq.t(), sx)  # ∂W = ĝᵀ x̂
        return grad_x, grad_w, None


class Linear(nn.Linear):
    """A bias-free linear in float32, FP8 with current scaling, or FP8 with delayed scaling."""

    def __init__(self, dim_in: int, dim_out: int, mode: str):
        super().__init__(dim_in, dim_out, bias=False)
        self.mode = mode
        self.hist = {k: AmaxHistory(HISTORY) for k in ("x", "w", "grad")}

    def forward(self, x):
        if self.mode == "float32":
            return super().forward(x)
        x_MK = x.reshape(-1, x.shape[-1])
        y = fp8.fp8_matmul(x_MK, self.weight) if self.mode == "current" else \
            DelayedFp8Matmul.apply(x_MK, self.weight, self.hist)
        return y.reshape(*x.shape[:-1], self.out_features)


class NextTokenMLP(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.mix = Linear(CONTEXT * DIM, DIM, mode)
        self.norms = nn.ModuleList(RMSNorm(DIM) for _ in range(BLOCKS))
        self.ups = nn.ModuleList(Linear(DIM, HIDDEN, mode) for _ in range(BLOCKS))
        self.downs = nn.ModuleList(Linear(HIDDEN, DIM, mode) for _ in range(BLOCKS))
        self.norm = RMSNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ctx_NC):
        h = self.mix(self.embed(ctx_NC).flatten(1))
        for norm, up, down in zip(self.norms, self.ups, self.downs):
            h = h + down(F.gelu(up(norm(h))))
        return self.head(self.norm(h))


def contexts(ids, positions):
    return ids[positions[:, None] + torch.arange(-CONTEXT, 0)], ids[positions]


def train_one(mode: str, steps: int, train_ids, val_ids) -> tuple[float, NextTokenMLP]:
    seed_everything(0)
    model = NextTokenMLP(mode)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = contexts(train_ids, torch.randint(CONTEXT, train_ids.numel(), (BATCH,), generator=g))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y = contexts(val_ids, torch.arange(CONTEXT, min(val_ids.numel(), 20_000)))
        return F.cross_entropy(model(x), y).item(), model


def main() -> None:
    steps = by_profile(ci=120, laptop=600)
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matmuls this small run faster on one thread
    results = {mode: train_one(mode, steps, train_ids, val_ids) for mode in ("float32", "current", "delayed")}
    torch.set_num_threads(threads)
    print(f"{steps} steps, batch {BATCH}, amax history of {HISTORY} steps")
    for mode, (val, _) in results.items():
        gap = val - results["float32"][0]
        print(f"  {mode:8s} validation loss {val:.4f}   ({gap:+.4f} against float32)")
    delayed = results["delayed"][1]
    print("delayed scaling, share of values that saturated (summed over the FP8 linears):")
    for kind in ("x", "w", "grad"):
        seen = sum(m.hist[kind].seen for m in delayed.modules() if isinstance(m, Linear))
        sat = sum(m.hist[kind].saturated for m in delayed.modules() if isinstance(m, Linear))
        print(f"  {kind:5s} {sat / max(seen, 1):.2e} of {seen:,} values")


if __name__ == "__main__":
    main()
