"""FP8 vs bf16 vs float32 expert matmuls, side by side (CPU by default; `--device cuda` on a GPU: the same table).

What it measures
----------------
1. One expert projection y = x Wᵀ (W [N, K] = gate|up of one expert: N = 2F, K = D) for several token counts M:
     float32       x @ Wᵀ in float32
     bf16          x @ Wᵀ in bfloat16
     fp8 mm        `minillama4.fp8.scaled_mm` on operands already in e4m3 (row-wise scales): on CUDA ≥ sm_89
                   `torch._scaled_mm` (the FP8 tensor cores); on CPU the emulation below (dequantize both,
                   one float32 matmul), which is what torch's own CPU kernel does for row-wise scales
     fp8 linear    `Fp8Linear`: the per-token quantization of x (amax, scale, cast), then fp8 mm: what inference pays
     fp8 emulated  `scaled_mm_emulated`: dequantize both, one float32 matmul
2. A whole routed-expert bank (E experts, tokens sorted by expert, `forward_sorted`) as the MoE layer runs it:
   float32 and bf16 `ExpertBank` against `Fp8ExpertBank` (loaded from the same weights).
3. On CPU, FP8 training's forward matmul (x and W in e4m3, one scale per tensor), M = 64: torch's own
   `torch._scaled_mm` against the package's `scaled_mm` (the emulation). On CPUs with AMX torch sends these
   operands to a oneDNN FP8 kernel, which is why the package does not call it on CPU.
Before timing, the FP8 results are checked against float32 (relative error ≤ 0.1) and, on CPU, torch's own
`_scaled_mm` against the emulation (bit for bit for row-wise scales).

On a CPU there are no FP8 matmul units: FP8 costs extra work (casts, dequantization) and the table shows it slower.
On an H100 the FP8 tensor cores have twice the bf16 peak (989 → 1979 TFLOPs dense), which large M approaches.

Run
---
    python bench/fp8_matmul.py                       # CPU, a small expert (D 1024, F 1024), M = 1, 32, 512
    python bench/fp8_matmul.py --device cuda         # a Scout expert (D 5120, F 8192), M = 1 … 8192
    python bench/fp8_matmul.py --dim 512 --hidden 512 --tokens 1 64 --rounds 3 --json out.json

Everything is random and local. Exit status is 0 whatever the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from minillama4.ffn import ExpertBank
from minillama4.fp8 import (E4M3, Fp8ExpertBank, Fp8Linear, quantize, scaled_mm, scaled_mm_emulated,
                            scaled_mm_supported)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, reps: int) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3 / reps


def measure(paths: dict, device, rounds: int, warmup: int, reps: int) -> dict:
    """Median ms per call of each path, the paths interleaved within every round."""
    samples = {k: [] for k in paths}
    with torch.no_grad():
        for r in range(warmup + rounds):
            for k, fn in paths.items():
                t = time_ms(fn, device, reps)
                if r >= warmup:
                    samples[k].append(t)
    return {k: statistics.median(v) for k, v in samples.items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def projection_paths(M: int, K: int, N: int, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(M)
    w = (torch.randn(N, K, generator=g) * K ** -0.5).to(device)
    x = torch.randn(M, K, generator=g).to(device)
    lin = Fp8Linear.from_float(w)[0]
    wq, sw = lin.qweight, lin.scales
    xq, sx = quantize(x, E4M3, "row")
    wt32, wt16, x16 = w.t().contiguous(), w.t().contiguous().bfloat16(), x.bfloat16()
    ref = x @ wt32
    out = {"float32": lambda: x @ wt32, "bf16": lambda: x16 @ wt16,
           "fp8 mm": lambda: scaled_mm(xq, sx, wq, sw, torch.bfloat16),
           "fp8 linear": lambda: lin(x16),
           "fp8 emulated": lambda: scaled_mm_emulated(xq, sx, wq, sw, torch.bfloat16)}
    for name in ("fp8 mm", "fp8 linear", "fp8 emulated"):
        err = rel(out[name](), ref)
        if not err <= 0.1:
            raise SystemExit(f"{name} at M={M}: relative error {err:.3f} against float32")
    if device.type == "cpu" and scaled_mm_supported("cpu", E4M3, E4M3, torch.float32, True) and not torch.equal(
            torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw.t().contiguous(), out_dtype=torch.float32),
            scaled_mm_emulated(xq, sx, wq, sw)):
        raise SystemExit(f"torch._scaled_mm differs from the emulation at M={M} on CPU")
    return out


def bank_paths(E: int, D: int, F: int, T: int, device) -> dict:
    torch.manual_seed(0)
    bank = ExpertBank(E, D, F).to(device)
    for p in bank.parameters():
        torch.nn.init.normal_(p, std=D ** -0.5)
    bank16 = ExpertBank(E, D, F).to(device).bfloat16()
    bank16.load_state_dict(bank.state_dict())
    f8 = Fp8ExpertBank(E, D, F)
    f8.load_gate_up(bank.gate_up_proj.detach())
    f8.load_down(bank.down_proj.detach())
    x = torch.randn(T, D, device=device)
    counts = torch.full((E,), T // E, device=device)
    counts[0] += T - int(counts.sum())
    x16 = x.bfloat16()
    with torch.no_grad():
        err = rel(f8.forward_sorted(x16, counts), bank.forward_sorted(x, counts))
    if not err <= 0.1:
        raise SystemExit(f"FP8 expert bank: relative error {err:.3f} against float32")
    return {"float32": lambda: bank.forward_sorted(x, counts), "bf16": lambda: bank16.forward_sorted(x16, counts),
            "fp8 linear": lambda: f8.forward_sorted(x16, counts)}


def training_paths(M: int, K: int, N: int) -> dict:
    """FP8 training's forward matmul on CPU, x [M, K] and W [N, K] in e4m3 with tensor-wise scales: torch's kernel
    against the package's emulation (checked close first: on AMX CPUs they sum in different orders)."""
    g = torch.Generator().manual_seed(M)
    xq, sx = quantize(torch.randn(M, K, generator=g), E4M3, "tensor")
    wq, sw = quantize(torch.randn(N, K, generator=g) * K ** -0.5, E4M3, "tensor")
    paths = {"torch._scaled_mm": lambda: torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw, out_dtype=torch.float32),
             "scaled_mm": lambda: scaled_mm(xq, sx, wq, sw)}
    err = rel(paths["torch._scaled_mm"](), paths["scaled_mm"]())
    if not err <= 1e-5:
        raise SystemExit(f"torch._scaled_mm with tensor-wise scales: relative error {err:.2e} against the emulation")
    return paths


def table(rows: list[tuple]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dim", type=int, help="D (default: 1024 on CPU, Scout's 5120 on CUDA)")
    ap.add_argument("--hidden", type=int, help="F, the expert width (default: 1024 on CPU, Scout's 8192 on CUDA)")
    ap.add_argument("--tokens", type=int, nargs="+", help="token counts M (default: 1 32 512; CUDA 1 16 256 2048 8192)")
    ap.add_argument("--experts", type=int, default=16, help="experts in the bank (Scout: 16)")
    ap.add_argument("--bank-tokens", type=int, help="tokens through the bank (default: 512 on CPU, 8192 on CUDA)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="calls per timed sample")
    ap.add_argument("--threads", type=int, help="torch threads on CPU (default: torch's)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    D = args.dim or (5120 if cuda else 1024)
    F = args.hidden or (8192 if cuda else 1024)
    Ms = args.tokens or ([1, 16, 256, 2048, 8192] if cuda else [1, 32, 512])
    T = args.bank_tokens or (8192 if cuda else 512)
    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    fast = cuda and scaled_mm_supported(device.type, E4M3, E4M3, torch.bfloat16, True)
    print(f"device: {name} ({platform.platform()}, {os.cpu_count()} CPUs), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; fp8 mm: {'torch._scaled_mm' if fast else 'the emulation'}")
    print(f"expert projection x Wᵀ, W [2F, D] = [{2 * F}, {D}]; bank: {args.experts} experts, {T} tokens; "
          f"medians of {args.rounds} rounds × {args.reps} calls; ratios are time / bf16 time (< 1: faster than bf16)")

    res = {"projection": {}, "bank": None}
    rows = [("M", "float32 ms", "bf16 ms", "fp8 mm ms", "fp8 linear ms", "fp8 emulated ms", "fp32/bf16",
             "fp8 mm/bf16", "fp8 linear/bf16", "emulated/bf16", "fp8 mm/fp32", "fp8 mm TFLOP/s")]
    for M in Ms:
        ms = measure(projection_paths(M, D, 2 * F, device), device, args.rounds, args.warmup, args.reps)
        res["projection"][M] = ms
        b = ms["bf16"]
        rows.append((str(M), *(f"{ms[k]:.3f}" for k in ("float32", "bf16", "fp8 mm", "fp8 linear", "fp8 emulated")),
                     *(f"{ms[k] / b:.2f}x" for k in ("float32", "fp8 mm", "fp8 linear", "fp8 emulated")),
                     f"{ms['fp8 mm'] / ms['float32']:.2f}x", f"{2 * M * D * 2 * F / ms['fp8 mm'] / 1e9:.3f}"))
    print("\n" + table(rows))

    ms = measure(bank_paths(args.experts, D, F, T, device), device, args.rounds, args.warmup, args.reps)
    res["bank"] = ms
    print("\n" + table([("expert bank", "float32 ms", "bf16 ms", "fp8 ms", "fp32/bf16", "fp8/bf16"),
                        (f"{args.experts} × [{D}→{2 * F}→{D}], {T} tokens", f"{ms['float32']:.2f}",
                         f"{ms['bf16']:.2f}", f"{ms['fp8 linear']:.2f}", f"{ms['float32'] / ms['bf16']:.2f}x",
                         f"{ms['fp8 linear'] / ms['bf16']:.2f}x")]))

    res["training"] = None
    if not cuda and scaled_mm_supported("cpu", E4M3, E4M3, torch.float32, False):
        M = min(max(Ms), 64)  # torch's AMX path: 77 s per call at M = 512 (D 1024, F 1024), so one small call
        ms = res["training"] = measure(training_paths(M, D, 2 * F), device, 1, 0, 1)
        print("\n" + table([("FP8 training's forward matmul, tensor-wise scales", "torch._scaled_mm ms", "scaled_mm ms",
                             "torch / scaled_mm"),
                            (f"x [{M}, {D}] · W [{2 * F}, {D}]ᵀ, e4m3 × e4m3", f"{ms['torch._scaled_mm']:.2f}",
                             f"{ms['scaled_mm']:.2f}", f"{ms['torch._scaled_mm'] / ms['scaled_mm']:.1f}x")]))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "platform": platform.platform(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(),
                       "fp8_mm": "torch._scaled_mm" if fast else "emulation", "D": D, "F": F,
                       "experts": args.experts, "bank_tokens": T, "rounds": args.rounds, "reps": args.reps,
                       "ms": res}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
