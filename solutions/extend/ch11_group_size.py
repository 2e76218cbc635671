"""Extend it, chapter 11: the int4 group size against error, bytes and validation loss.

For each group size g (inputs per float32 scale), a fresh copy of the toy mini-Scout has its routed and shared
experts quantized with `quant.quantize_model(model, group_size=g)`. Printed per g:

    bits per expert weight   4 + 32/g
    Scout text model         quant.expected_int4_bytes(Llama4Config.preset("scout"), group_size=g), in GB (10^9 bytes)
    weight error             mean relative RMS error ‖Ŵ − W‖ / ‖W‖ over the quantized matrices
    validation loss          next-token cross-entropy on held-out windows of the course corpus, and the change
                             from the float32 model on the same windows

The toy's experts have 128 and 256 inputs, so g = 128 is the largest size that divides both.

    python solutions/extend/ch11_group_size.py             # MINILLAMA4_PROFILE=ci for a short run
"""

import torch
import torch.nn.functional as F

from minillama4 import Llama4Config, quant
from minillama4.course import data, zoo
from minillama4.course.profile import by_profile

GROUP_SIZES = (16, 32, 64, 128)
SEQ = 128  # the window length the toy was trained on
GB = 10**9


def val_windows(num_windows: int) -> torch.Tensor:
    """[B, SEQ + 1] consecutive windows from the start of the validation split."""
    ids = data.course_tokens("val").ids
    n = min(num_windows, (ids.numel() - 1) // SEQ)
    return torch.stack([ids[i * SEQ: i * SEQ + SEQ + 1] for i in range(n)])


def val_loss(model, ids_BT: torch.Tensor) -> float:
    """Mean next-token cross-entropy over the windows."""
    with torch.no_grad():
        logits_BTV = model(ids_BT[:, :-1])
    return F.cross_entropy(logits_BTV.flatten(0, 1).float(), ids_BT[:, 1:].flatten()).item()


def main() -> None:
    scout = Llama4Config.preset("scout")
    ids_BT = val_windows(by_profile(ci=16, laptop=64))
    model, _ = zoo.pretrained("mini-scout", verbose=False)
    base = val_loss(model, ids_BT)
    print(f"mini-scout float32: loss {base:.4f} on {ids_BT.shape[0]} held-out windows of {SEQ} tokens")
    print(f"{'g':>4s} {'bits/weight':>11s} {'Scout text model':>17s} {'weight error':>13s} {'loss':>7s} {'change':>8s}")
    rows = []
    for g in GROUP_SIZES:
        model, _ = zoo.pretrained("mini-scout", verbose=False)  # a fresh copy to quantize in place
        report = quant.quantize_model(model, group_size=g)
        err = sum(e.rel_rms for e in report) / len(report)
        loss = val_loss(model, ids_BT)
        rows.append((g, err, loss))
        print(f"{g:4d} {4 + 32 / g:11.3f} {quant.expected_int4_bytes(scout, group_size=g) / GB:14.1f} GB "
              f"{err:13.4f} {loss:7.4f} {loss - base:+8.4f}")
    errs = [e for _, e, _ in rows]
    print("smaller groups, smaller weight error:", all(a < b for a, b in zip(errs, errs[1:])))


if __name__ == "__main__":
    main()
