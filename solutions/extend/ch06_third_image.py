"""Extend it, chapter 06: a third image in the prompt.

The trained toy vision model (`shapes.pretrained_vlm("mini-vlm")`) has seen one or two images per prompt. A new
task puts three in: "Which image has the blue shape?", where the asked colour is in exactly one of the three, and
the answer is "first", "second" or "third". We measure the model on it, fine-tune a copy briefly on a mix of the
new task and the old ones (the same answer-only loss, the package's optimizer step), and measure again: the new task
per answer, and the old tasks, to see what was forgotten.

    python solutions/extend/ch06_third_image.py      # MINILLAMA4_PROFILE=ci for a short run
"""

import copy
import random

import torch

from minillama4.course import shapes
from minillama4.course.profile import by_profile
from minillama4.train.pretrain import lr_at, make_optimizer, optimizer_step

ORDINALS = ("first", "second", "third")


def which_of_three(rng: random.Random) -> shapes.Example:
    """Three scenes; the asked colour appears in exactly one of them."""
    while True:
        scenes = [shapes.random_scene(rng) for _ in range(3)]
        colours = [{s.colour for s in scene} for scene in scenes]
        k = rng.randrange(3)
        only_k = colours[k] - set().union(*(c for i, c in enumerate(colours) if i != k))
        if only_k:
            break
    colour = rng.choice(sorted(only_k))
    return shapes.Example("which_of_three", [shapes.render(s, rng) for s in scenes], scenes,
                          f"Which image has the {colour} shape?", ORDINALS[k])


@torch.no_grad()
def exact_match(model, examples, tpt) -> dict[str, float]:
    """Share of examples whose whole answer (and <|eot|>) is the argmax, per answer."""
    model.eval()
    right, total = {}, {}
    for i in range(0, len(examples), 100):
        chunk = examples[i:i + 100]
        b = shapes.encode(chunk, tpt)
        ok = ((model(b.input_ids, b.pixel_values).argmax(-1) == b.labels) | (b.labels == -100)).all(-1)
        for ex, good in zip(chunk, ok.tolist()):
            right[ex.answer] = right.get(ex.answer, 0) + good
            total[ex.answer] = total.get(ex.answer, 0) + 1
    return {a: right[a] / total[a] for a in ORDINALS if a in total}


def report(label, model, three, old, tpt) -> None:
    per_answer = exact_match(model, three, tpt)
    old_acc = shapes.accuracy(model, old)
    print(f"{label:22s} three images: " + ", ".join(f"{a} {v:.2f}" for a, v in per_answer.items())
          + " | old tasks: " + ", ".join(f"{t} {v:.2f}" for t, v in old_acc.items()))


def main() -> None:
    vlm, _ = shapes.pretrained_vlm("mini-vlm", verbose=False)
    tpt = vlm.config.vision_config.tokens_per_tile
    rng = random.Random(7)
    three = [which_of_three(rng) for _ in range(by_profile(ci=150, laptop=300))]
    old = shapes.make_examples(by_profile(ci=150, laptop=300), seed=123)
    report("trained on 1-2 images", vlm, three, old, tpt)

    steps = by_profile(ci=150, laptop=400)
    tc = shapes.VLMTrainConfig(steps=steps, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    model = copy.deepcopy(vlm).train()
    opt = make_optimizer(model, tc)
    data = random.Random(0)
    for step in range(steps):  # half the batch from the new task, half from the old ones
        batch = [which_of_three(data) if i % 2 else shapes.make_example(data.choice(shapes.TASKS), data)
                 for i in range(tc.batch_size)]
        loss, _, _ = shapes.answer_loss(model, shapes.encode(batch, tpt), balance_coef=tc.balance_coef)
        optimizer_step(opt, loss, model, tc.grad_clip, lr=lr_at(step, tc))
    report(f"+ {steps} steps on the mix", model, three, old, tpt)


if __name__ == "__main__":
    main()
