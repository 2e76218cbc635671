"""Where the time of an int4 load goes, stage by stage, on one Scout-shaped shard (CPU).

Writes one safetensors shard holding one layer's `gate_up_proj` with Scout's shape ([16, 5120, 16384], bf16, the
key name of the release; 2.7 GB), then reads and quantizes its first --experts experts the way the streaming loader
does (`checkpoint._ExpertSlices`, `QuantizedExpertBank.load_gate_up`), timing each stage on its own:

    read       the expert's bytes from the memory-mapped shard into a tensor
    finite     the loader's NaN / inf check
    to float   bf16 [D, 2F] → float32 [2F, D] (transposed to [out, in], contiguous)
    quantize   scales and 4-bit values (`quant.quantize_int4`)
    pack       two values per byte (`quant.pack_int4`)
    error      the quantization report (`quant.quant_error`: dequantize, difference, norms)
    loader     the whole `load_gate_up` of those experts (every stage, as the loader runs them)

    python bench/int4_load_stages.py --workdir /tmp/scout_shard --experts 2

Prints a table: seconds per expert for each stage, and the loader's GB/s of bf16 read.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minillama4 import checkpoint
from minillama4.quant import Int4ExpertBank, dequantize_int4, pack_int4, quant_error, quantize_int4

E, D, F = 16, 5120, 8192  # Scout: experts, hidden size, expert hidden size
KEY = "language_model.model.layers.0.feed_forward.experts.gate_up_proj"


def write_shard(path: Path) -> int:
    gen = torch.Generator().manual_seed(0)
    w = torch.empty(E, D, 2 * F, dtype=torch.bfloat16)
    for e in range(E):  # expert by expert: float32 temporaries stay one expert large
        w[e] = (torch.randn(D, 2 * F, generator=gen) * 0.02).to(torch.bfloat16)
    save_file({KEY: w}, str(path), metadata={"format": "pt"})
    return path.stat().st_size


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def stages(f, path: Path, experts: int) -> dict:
    """Seconds per stage, summed over the first `experts` experts."""
    slices = checkpoint._ExpertSlices(f, path, KEY, (E, D, 2 * F), torch.device("cpu"))
    sl = f.get_slice(KEY)
    total = dict.fromkeys(("read", "finite", "to float", "quantize", "pack", "error"), 0.0)
    for e in range(experts):
        w_KN, t = timed(lambda: sl[e])
        total["read"] += t
        _, t = timed(lambda: checkpoint._check_finite(w_KN, path, KEY))
        total["finite"] += t
        w_NK, t = timed(lambda: w_KN.t().contiguous().float())
        total["to float"] += t
        (q, s), t = timed(lambda: quantize_int4(w_NK))
        total["quantize"] += t
        _, t = timed(lambda: pack_int4(q))
        total["pack"] += t
        _, t = timed(lambda: quant_error(KEY, w_NK, dequantize_int4(q, s), 0))
        total["error"] += t
    bank = Int4ExpertBank(experts, D, F, layout="plain")
    sub = _First(slices, experts)
    _, total["loader"] = timed(lambda: bank.load_gate_up(sub, KEY))
    return total


class _First:
    """The first n experts of an `_ExpertSlices` (what `load_gate_up` indexes, with the shape it checks)."""

    def __init__(self, slices, n):
        self.slices, self.shape = slices, torch.Size((n, *slices.shape[1:]))

    def __getitem__(self, e):
        return self.slices[e]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="where the 2.7 GB shard is written (deleted afterwards)")
    p.add_argument("--experts", type=int, default=2, help="experts to time (of 16)")
    p.add_argument("--keep", action="store_true", help="keep the shard (and reuse it next time)")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    path = Path(args.workdir) / "model-00001-of-00001.safetensors"
    try:
        if not path.is_file():
            nbytes, t = timed(lambda: write_shard(path))
            print(f"wrote {nbytes / 1e9:.2f} GB in {t:.0f} s")
        with safe_open(str(path), "pt") as f:
            total = stages(f, path, args.experts)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    n = args.experts
    expert_bytes = D * 2 * F * 2
    print(f"\n{platform.processor() or 'cpu'}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{n} experts of [{D}, {2 * F}] bf16 ({expert_bytes / 1e6:.0f} MB each)\n")
    print("| stage | s per expert | share of the stages |\n|---|---|---|")
    parts = sum(v for k, v in total.items() if k != "loader")
    for k, v in total.items():
        if k != "loader":
            print(f"| {k} | {v / n:.2f} | {v / parts:.0%} |")
    print(f"| **loader** (`load_gate_up`) | {total['loader'] / n:.2f} | {expert_bytes * n / total['loader'] / 1e9:.3f} GB/s |")


if __name__ == "__main__":
    main()
