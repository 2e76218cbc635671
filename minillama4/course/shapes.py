"""A toy early-fusion task: coloured shapes on a 2×2 grid, questions about them, and a tiny Llama 4 that answers.

Every image is 16×16 pixels (one tile) with two shapes in two of its four 8×8 cells: a square and a circle, in two
different colours, at slightly random sizes and positions. With 4-pixel patches the ViT sees a 4×4 grid, and the
pixel shuffle turns each 2×2 block of patches, i.e. each cell, into one `<|patch|>` token: 4 tokens per image.
Three kinds of question, each answered in a few words:

    colour        "What colour is the top left shape?"           → "red" | "green" | "blue" | "yellow"
    where         "Where is the red shape?"  (grounding)         → "top left" | "top right" | "bottom left" | …
    which_image   two images: "Which image has the blue shape?"  → "first" | "second"

A prompt is `<|begin_of_text|>` + one `<|image|>` layout per image + the question; the target is the answer followed
by `<|eot|>`, and the loss is on those target tokens only. A model that cannot see the image can only learn the answer
frequencies: 1/4 for colour and where, 1/2 for which_image. That is the text-only baseline (`mini-vlm-blind`: the
same model and recipe for half the steps; its `<|patch|>` tokens keep their plain text embedding).

    model, history = pretrained_vlm("mini-vlm")          # vision + text, trained on first use, then cached
    model, history = pretrained_vlm("mini-vlm-blind")    # the same decoder trained without the images
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..checkpoint import from_pretrained, save_pretrained
from ..config import Llama4Config
from .cachekey import cache_key
from .data import cache_dir, course_tokenizer, display_path
from ..image import expand_image_tokens, normalize
from ..losses import load_balancing_loss
from ..model import Llama4
from .profile import by_profile, current_profile
from .tokenizer import ASSET as TOKENIZER_ASSET
from ..train import seed_everything
from ..train.pretrain import lr_at, optimizer_step
from ..vision import VisionConfig

IMAGE_SIZE = 16  # pixels per side: one tile
COLOURS = {"red": (230, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 240), "yellow": (235, 215, 40)}
KINDS = ("square", "circle")
CELLS = ("top left", "top right", "bottom left", "bottom right")  # row-major over the 2×2 grid
TASKS = ("colour", "where", "which_image")
CHANCE = {"colour": 1 / len(COLOURS), "where": 1 / len(CELLS), "which_image": 1 / 2}


# ------------------------------------------------------------------------------------------------- images
@dataclass
class Shape:
    kind: str  # "square" | "circle"
    colour: str  # a key of COLOURS
    cell: int  # 0 … 3, index into CELLS


def random_scene(rng: random.Random) -> list[Shape]:
    """A square and a circle, two different colours, two different cells."""
    c1, c2 = rng.sample(list(COLOURS), 2)
    p1, p2 = rng.sample(range(len(CELLS)), 2)
    return [Shape("square", c1, p1), Shape("circle", c2, p2)]


def render(scene: list[Shape], rng: random.Random, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 [3, size, size]: dark background with a little noise, each shape inside its cell (size and offset jittered)."""
    img = torch.full((3, size, size), 20, dtype=torch.int16)
    img += torch.randint(0, 12, (3, size, size), generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))
    half = size // 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for s in scene:
        side = rng.randint(round(half * 0.6), half - 2)  # 5 … 6 px in an 8-px cell
        top = (s.cell // 2) * half + rng.randint(1, half - side - 1)
        left = (s.cell % 2) * half + rng.randint(1, half - side - 1)
        if s.kind == "square":
            mask = (yy >= top) & (yy < top + side) & (xx >= left) & (xx < left + side)
        else:
            r = side / 2
            mask = (yy + 0.5 - top - r) ** 2 + (xx + 0.5 - left - r) ** 2 <= r * r
        for ch, v in enumerate(COLOURS[s.colour]):
            img[ch][mask] = v
    return img.clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------- questions
@dataclass
class Example:
    task: str  # one of TASKS
    images: list[torch.Tensor]  # uint8 [3, S, S] each
    scenes: list[list[Shape]]  # what is drawn in each image
    question: str
    answer: str


def make_example(task: str, rng: random.Random, size: int = IMAGE_SIZE) -> Example:
    if task == "colour":
        scene = random_scene(rng)
        s = rng.choice(scene)
        return Example(task, [render(scene, rng, size)], [scene], f"What colour is the {CELLS[s.cell]} shape?", s.colour)
    if task == "where":
        scene = random_scene(rng)
        s = rng.choice(scene)
        return Example(task, [render(scene, rng, size)], [scene], f"Where is the {s.colour} shape?", CELLS[s.cell])
    if task == "which_image":
        a = random_scene(rng)
        while True:  # the asked colour is in exactly one of the two images
            b = random_scene(rng)
            only_a = {s.colour for s in a} - {s.colour for s in b}
            only_b = {s.colour for s in b} - {s.colour for s in a}
            if only_a and only_b:
                break
        second = rng.random() < 0.5
        colour = rng.choice(sorted(only_b if second else only_a))
        return Example(task, [render(a, rng, size), render(b, rng, size)], [a, b], f"Which image has the {colour} shape?",
                       "second" if second else "first")
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def make_examples(n: int, seed: int, tasks: tuple[str, ...] = TASKS, size: int = IMAGE_SIZE) -> list[Example]:
    """n examples, tasks in turn, from their own seeded generator."""
    rng = random.Random(seed)
    return [make_example(tasks[i % len(tasks)], rng, size) for i in range(n)]


def prompt_text(ex: Example) -> str:
    """The prompt with one `<|image|>` placeholder per image (expanded by `encode`)."""
    return "<|begin_of_text|>" + "<|image|>" * len(ex.images) + ex.question


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] prompt + answer + <|eot|>, right-padded with <|finetune_right_pad|>
    labels: torch.Tensor  # [B, T] the next token where it is part of the answer, else -100
    pixel_values: torch.Tensor  # [N, 3, S, S] every image's tile, in prompt order
    prompt_len: list[int]  # tokens before the answer, per row


def encode(examples: list[Example], tokens_per_tile: int, tok=None) -> Batch:
    tok = tok or course_tokenizer()
    pad, eot = tok.special_ids["<|finetune_right_pad|>"], tok.special_ids["<|eot|>"]
    rows, plens = [], []
    for ex in examples:
        p = tok.encode(expand_image_tokens(prompt_text(ex), [(1, 1)] * len(ex.images), tokens_per_tile))
        a = tok.encode(" " + ex.answer) + [eot]
        rows.append(p + a)
        plens.append(len(p))
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, (r, n) in enumerate(zip(rows, plens)):
        ids[i, :len(r)] = torch.tensor(r)
        labels[i, n - 1:len(r) - 1] = torch.tensor(r[n:])  # position t predicts token t + 1
    pixels = torch.stack([normalize(im, torch.float32) for ex in examples for im in ex.images])
    return Batch(ids, labels, pixels, plens)


# ------------------------------------------------------------------------------------------------- the models
def vlm_config(image_size: int = IMAGE_SIZE, patch_size: int = 4) -> Llama4Config:
    """A tiny Llama 4 with vision: a 2-layer ViT on 16-px tiles (4-px patches → 4×4 grid → 4 tokens per tile after
    the pixel shuffle), and a 2-layer decoder (layer 0 dense, layer 1 MoE with 4 experts) over the course's
    512-token vocabulary. The weights start larger than Llama 4's 0.02 (0.1 in the ViT, 0.05 in the decoder): in a
    model this small, 0.02 leaves the image signal so faint after the adapter and projector that learning to use it
    takes several times longer."""
    tok = course_tokenizer()
    vision = VisionConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                          image_size=image_size, patch_size=patch_size, projector_input_dim=128, projector_output_dim=128,
                          vision_output_dim=128, initializer_range=0.1)
    return Llama4Config(vocab_size=tok.vocab_size, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=24, intermediate_size=192, intermediate_size_mlp=384,
                        num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
                        attention_chunk_size=128, floor_scale=128, rope_theta=10000.0, max_position_embeddings=256,
                        initializer_range=0.05, pad_token_id=0, bos_token_id=1, eos_token_id=tok.special_ids["<|eot|>"],
                        vision_config=vision, image_token_id=tok.special_ids["<|patch|>"])


@dataclass(frozen=True)
class VLMTrainConfig:
    steps: int = 600  # optimizer steps
    batch_size: int = 16  # examples per step (fresh ones every step: the data never repeats)
    lr: float = 1e-3  # peak AdamW learning rate (3e-3 left one seed of three at chance on a task for good)
    min_lr: float = 1e-4  # at the end of the cosine decay
    warmup_steps: int = 30  # linear warm-up
    weight_decay: float = 0.05  # AdamW decay on matrices
    grad_clip: float = 1.0  # max global gradient norm
    balance_coef: float = 0.01  # Switch load-balancing loss weight for the MoE layer
    eval_every: int = 50  # steps between evaluations on the held-out set
    eval_examples: int = 300  # held-out examples (all tasks in turn)
    see_images: bool = True  # False: the text-only baseline (pixel_values never given)
    seed: int = 0  # init, training data stream


@dataclass
class VLMHistory:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # answer-token cross-entropy per step
    eval_steps: list[int] = field(default_factory=list)
    accuracy: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TASKS})  # held-out, per task
    cpu_seconds: float = 0.0  # process CPU time of the run

    def to_dict(self) -> dict:
        return asdict(self)


def recipes(profile: str | None = None, seed: int = 0) -> dict[str, tuple[Llama4Config, VLMTrainConfig]]:
    """The two recipes for the profile. The blind baseline trains half as long: it reaches its plateau (the answer
    frequencies) within the first hundred steps, and nothing it could learn later depends on the images. `seed` (init
    and data stream) is 0 in the course; `bench/model_claims_spread.py` trains others to measure how much a result
    owes to it."""
    steps = by_profile(ci=900, laptop=2400, gpu=4000, profile=profile)
    tc = VLMTrainConfig(steps=steps, eval_every=max(25, steps // 6), seed=seed)
    blind = VLMTrainConfig(**{**asdict(tc), "steps": steps // 2, "eval_every": max(25, steps // 12), "see_images": False})
    return {"mini-vlm": (vlm_config(), tc), "mini-vlm-blind": (vlm_config(), blind)}


def answer_loss(model: Llama4, batch: Batch, see_images: bool = True, balance_coef: float = 0.0):
    """(loss, answer cross-entropy, logits): cross-entropy on the answer tokens only, + the MoE balancing loss."""
    logits, routing = model(batch.input_ids, batch.pixel_values if see_images else None, return_routing=True)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.labels.reshape(-1), ignore_index=-100)
    loss = ce
    if routing and balance_coef:
        loss = loss + balance_coef * torch.stack([load_balancing_loss(r.logits, r.indices.shape[-1]) for r in routing]).mean()
    return loss, ce, logits


@torch.no_grad()
def accuracy(model: Llama4, examples: list[Example], see_images: bool = True, batch_size: int = 100) -> dict[str, float]:
    """Exact-match accuracy per task: every answer token (and the final <|eot|>) must be the argmax given the prompt
    and the answer so far, i.e. exactly what greedy decoding would write."""
    model.eval()
    right = {t: 0 for t in TASKS}
    total = {t: 0 for t in TASKS}
    tpt = model.config.vision_config.tokens_per_tile
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        b = encode(chunk, tpt)
        logits = model(b.input_ids, b.pixel_values if see_images else None)
        pred = logits.argmax(-1)
        ok = ((pred == b.labels) | (b.labels == -100)).all(-1)
        for ex, good in zip(chunk, ok.tolist()):
            right[ex.task] += good
            total[ex.task] += 1
    return {t: right[t] / total[t] for t in TASKS if total[t]}


def train_vlm(model: Llama4, cfg: VLMTrainConfig, progress: bool = True, desc: str = "training") -> VLMHistory:
    """Train in place on a fresh stream of examples; evaluate on a fixed held-out set every eval_every steps."""
    from tqdm.auto import tqdm

    from ..train.pretrain import make_optimizer

    opt = make_optimizer(model, cfg)
    size = model.config.vision_config.image_size
    held_out = make_examples(cfg.eval_examples, seed=10_000 + cfg.seed, size=size)
    rng = random.Random(cfg.seed)
    tpt = model.config.vision_config.tokens_per_tile
    hist = VLMHistory()
    t0 = time.process_time()
    model.train()
    for step in tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=1.0):
        batch = encode([make_example(TASKS[rng.randrange(len(TASKS))], rng, size) for _ in range(cfg.batch_size)], tpt)
        loss, ce, _ = answer_loss(model, batch, cfg.see_images, cfg.balance_coef)
        optimizer_step(opt, loss, model, cfg.grad_clip, lr=lr_at(step, cfg))
        hist.steps.append(step)
        hist.train_loss.append(ce.item())
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            acc = accuracy(model, held_out, cfg.see_images)
            hist.eval_steps.append(step + 1)
            for t in TASKS:
                hist.accuracy[t].append(acc[t])
            model.train()
    model.eval()
    hist.cpu_seconds = time.process_time() - t0
    return hist


def _key(config: Llama4Config, tc: VLMTrainConfig, profile: str) -> str:
    """The recipe, the profile, the tokenizer, the code that makes the data and trains (this module and everything it
    imports) and the runtime."""
    tokenizer = hashlib.sha256(TOKENIZER_ASSET.read_bytes()).hexdigest()
    payload = {"config": asdict(config), "train": asdict(tc), "profile": profile, "tokenizer": tokenizer}
    return cache_key(payload, __name__)


def pretrained_vlm(name: str = "mini-vlm", profile: str | None = None, verbose: bool = True, seed: int = 0):
    """(model, VLMHistory) of a cached recipe; trains once (deterministically) if it is not cached yet."""
    profile = profile or current_profile()
    all_recipes = recipes(profile, seed)
    if name not in all_recipes:
        raise ValueError(f"unknown toy vision model {name!r}; available: {', '.join(all_recipes)}")
    config, tc = all_recipes[name]
    path = cache_dir() / "models" / f"{name}-{profile}-{_key(config, tc, profile)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and load
        if not (path / "history.json").is_file():
            if verbose:
                print(f"Training {name} for {tc.steps} steps ({profile} profile); cached afterwards in "
                      f"{display_path(path)}")
            seed_everything(tc.seed)
            model = Llama4(config)
            hist = train_vlm(model, tc, progress=verbose, desc=name)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            save_pretrained(model, tmp)
            (tmp / "history.json").write_text(json.dumps(hist.to_dict()))
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
    model = from_pretrained(path, dtype=torch.float32).eval()
    return model, VLMHistory(**json.loads((path / "history.json").read_text()))
