"""Extend it, chapter 04: the iRoPE model with other chunk sizes, its text loss past the training length and its
needle score.

The chapter trains iRoPE (layers 0-2 RoPE inside chunks of C = 32 tokens, layer 3 NoPE over the whole context) on
64-token windows with the passkey task, and tests it on contexts up to 8× longer. Here the same model, recipe and
data with C = 16, 32 and 64 (C = 64 = the training length: in training the RoPE layers then see every offset, as
RoPE everywhere does, but at test time they still never see an offset of 64 or more). For each C it prints:

    text loss     mean next-token loss on held-out text at positions 32-63 (in range) and 128-511 (2×-8×)
    passkey       accuracy at 64, 256 and 512 tokens, mean over needle depths 0, 0.25, 0.5, 0.75, 1
    cut needles   the share of needle positions whose three tokens a chunk boundary splits: 2 / C

Under the ci profile the runs are far too short to learn the passkey (its accuracies stay near 0): run it under the
default laptop profile (a few minutes per chunk size) to see the real comparison.

    python solutions/extend/ch04_chunk_size.py             # MINILLAMA4_PROFILE=ci for a short run
"""

import dataclasses

import torch

from minillama4 import Llama4Config
from minillama4.course.data import course_tokens
from minillama4.course.long_context import (NeedleTask, loss_by_position, needle_train_config, position_variants,
                                            retrieval_accuracy, train_needle)
from minillama4.course.profile import by_profile

TRAIN_LEN = 64
CHUNKS = (16, 32, 64)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    base = Llama4Config.preset("toy").replace(hidden_size=64, head_dim=16, moe_layers=[], intermediate_size_mlp=256)
    task = NeedleTask.for_course_tokenizer(course_tokens("train").ids, key_len=2)
    val_task = NeedleTask.for_course_tokenizer(course_tokens("val").ids, key_len=2)
    val_ids = course_tokens("val").ids
    tc = needle_train_config(TRAIN_LEN)
    tc = dataclasses.replace(tc, steps=by_profile(ci=100, laptop=tc.steps))  # ci: a smoke run only
    n_seq = by_profile(ci=8, laptop=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the numbers do not depend on the core count
    try:
        print(f"iRoPE, {tc.steps} steps of {tc.batch_size} sequences of {TRAIN_LEN} tokens per chunk size")
        print(f"{'C':>4s} {'loss 32-63':>11s} {'loss 128-511':>13s} {'passkey@64':>11s} {'@256':>6s} {'@512':>6s} "
              f"{'cut needles':>12s}")
        for C in CHUNKS:
            model, _ = train_needle(position_variants(base, chunk_size=C)["iRoPE"], task, tc)
            lp = loss_by_position(model, val_ids, 8 * TRAIN_LEN, n_windows=16)
            acc = [sum(retrieval_accuracy(model, val_task, n * TRAIN_LEN, n_sequences=n_seq, depth=d, seed=100 + j)
                       for j, d in enumerate(DEPTHS)) / len(DEPTHS) for n in (1, 4, 8)]
            print(f"{C:4d} {lp[TRAIN_LEN // 2:TRAIN_LEN].mean():11.3f} {lp[2 * TRAIN_LEN:].mean():13.3f} "
                  f"{acc[0]:11.2f} {acc[1]:6.2f} {acc[2]:6.2f} {2 / C:12.3f}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
