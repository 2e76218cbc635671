"""What the loader's checks of each weight (a float dtype, no NaN or inf) add to `from_pretrained`. (CPU)

The loader maps the safetensors file and, for weights already in the wanted dtype on the CPU, keeps the mapped
tensors: without checks, loading reads almost nothing, and the pages are read from the file when the model first
uses them. The non-finite check reads every weight once, as it is loaded (one min/max reduction per tensor). So
three timings, interleaved in one process, medians over rounds:

    unchecked          from_pretrained with the non-finite check switched off (what loading cost before it)
    unchecked + read   the same, then one pass over every weight (what the first use of the model reads anyway)
    checked            from_pretrained as it is

and the ratios checked / unchecked and checked / (unchecked + read), for float32 and bfloat16 checkpoints loaded as
stored, and for a bfloat16 checkpoint loaded as float32 (a conversion: the loader reads every weight anyway).

Run
---
    python bench/load_checks.py                  # a 92 M-parameter model (368 MB in float32), 7 rounds
    python bench/load_checks.py --width 128 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import minillama4
from minillama4 import checkpoint


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_every_weight(model) -> None:
    for p in model.parameters():
        p.sum()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=512, help="hidden size of the toy-shaped model")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    D = args.width
    cfg = minillama4.Llama4Config.preset("toy").replace(
        hidden_size=D, intermediate_size=2 * D, intermediate_size_mlp=4 * D, vocab_size=32000,
        num_attention_heads=8, num_key_value_heads=2, head_dim=D // 8, num_local_experts=8)
    check = checkpoint._check_finite
    results = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg.num_parameters() / 1e6:.0f} M parameters")
    for stored, load_as in ((torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, torch.float32)):
        with tempfile.TemporaryDirectory() as path:
            torch.manual_seed(0)
            minillama4.save_pretrained(minillama4.Llama4(cfg).to(stored), path)
            load = lambda: minillama4.from_pretrained(path, dtype=load_as)  # noqa: E731
            times = {"unchecked": [], "unchecked + read": [], "checked": []}
            for _ in range(args.rounds):
                checkpoint._check_finite = lambda *a: None
                try:
                    times["unchecked"].append(timed(load))
                    times["unchecked + read"].append(timed(lambda: read_every_weight(load())))
                finally:
                    checkpoint._check_finite = check
                times["checked"].append(timed(load))
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        name = str(stored).removeprefix("torch.") + (f" as {str(load_as).removeprefix('torch.')}" if load_as else "")
        results[name] = ms
        print(f"{name:<20} " + "  ".join(f"{k} {v:6.0f} ms" for k, v in ms.items())
              + f"   checked / unchecked {ms['checked'] / ms['unchecked']:.2f}x,"
              f" checked / (unchecked + read) {ms['checked'] / ms['unchecked + read']:.2f}x")
    return results


if __name__ == "__main__":
    main()
