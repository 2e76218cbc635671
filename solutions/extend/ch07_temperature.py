"""Extend it, chapter 07: does a hotter teacher help? The same student distilled at T = 1, 2 and 4.

Every run starts from the same initial weights (mini-scout's config) and sees the same batches in the same order,
with the course's warm-up / stable / decay schedule for α and the same optimizer; only the temperature of the soft
targets changes. The baseline trains on the hard labels alone. Thanks to the T² factor the soft gradient stays on the
hard term's scale, so α is left unchanged across temperatures. The teacher is the cached `mini-behemoth`.

Prints each run's held-out loss (next-token cross-entropy, the students' evaluation windows) and its lead over the
baseline. Under MINILLAMA4_PROFILE=ci the run is short (a smoke test: read the laptop run for the comparison).

    python solutions/extend/ch07_temperature.py
"""

import copy

import torch

import minillama4
from minillama4.course import zoo
from minillama4.course.data import course_tokens
from minillama4.course.profile import by_profile
from minillama4.train import TrainConfig, seed_everything
from minillama4.train.distill import DistillConfig, distill, student_train_config

TEMPERATURES = (1.0, 2.0, 4.0)


def main() -> None:
    steps = by_profile(ci=40, laptop=300)
    tc = TrainConfig(**{**student_train_config().__dict__, "steps": steps, "warmup_steps": steps // 10,
                        "eval_every": steps, "eval_batches": 4})
    teacher, _ = zoo.pretrained("mini-behemoth", verbose=False)
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    seed_everything(1)
    init = minillama4.Llama4(zoo.recipes()["mini-scout"].config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a toy this small gains little from more threads
    try:
        results = {"hard labels only": distill(copy.deepcopy(init), None, train_ids, val_ids, tc, progress=False)}
        for T in TEMPERATURES:
            kd = DistillConfig(temperature=T)  # the default wsd schedule, alpha 0.1 → 0.9 → 0.1
            results[f"distilled, T = {T:g}"] = distill(copy.deepcopy(init), teacher, train_ids, val_ids, tc, kd,
                                                       progress=False)
    finally:
        torch.set_num_threads(threads)
    base = results["hard labels only"].val_loss[-1]
    print(f"student runs of {steps} steps × {tc.batch_size} × {tc.seq_len} tokens, the same init and batches")
    print(f"{'run':20s} {'held-out loss':>13s} {'lead over hard labels':>22s}")
    for name, h in results.items():
        print(f"{name:20s} {h.val_loss[-1]:13.3f} {base - h.val_loss[-1]:22.3f}")
    best = min(results, key=lambda n: results[n].val_loss[-1])
    print(f"best: {best}")


if __name__ == "__main__":
    main()
