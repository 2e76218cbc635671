"""MetaP experiments (chapter 13): does a learning rate tuned on a small model stay the best one when the model
gets wider or deeper? Two measurements, each under "standard" and "metap" (minillama4/metap.py):

    sweep_config(width, depth, parametrization)  mini-Scout at another width / depth: heads of 16 dims (H = D/16,
                                                 K = H/2), experts of width F = 2D, MoE in every layer, iRoPE
    coord_check(parametrization, widths, …)      after a few steps at one learning rate: per layer, the RMS of its
                                                 output and of how much that output moved since init, per width
    lr_sweep(profile)                            final validation loss on a log grid of learning rates, per width,
                                                 depth and parametrization (each run cached on its own)
    best_lrs(sweep)                              where the optimum lands: grid index and learning rate per curve

Everything is seeded and runs on the course corpus; sizes and steps follow MINILLAMA4_PROFILE.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace

import torch

from ..config import Llama4Config
from ..model import Llama4
from ..train import TrainConfig, get_batch, lm_loss, make_optimizer, optimizer_step, seed_everything, train
from .cachekey import cache_key
from .data import cache_dir, course_tokens
from .profile import by_profile, current_profile

HEAD_DIM = 8  # every width keeps this head size and adds heads (as Llama 4 does: Dh = 128 at every size)
COORD_WIDTHS = (16, 32, 64, 128, 256)  # the coordinate check's widths (16x)


def sweep_config(width: int, depth: int, parametrization: str, base: tuple[int, int],
                 head_dim: int = HEAD_DIM) -> Llama4Config:
    """mini-Scout (the toy preset) at `width` and `depth`; `base` = (D₀, L₀), the shape where metap equals standard
    (in both experiments: the smallest model, where a learning rate is tuned before it is transferred up)."""
    if width % (2 * head_dim):
        raise ValueError(f"width must be a multiple of {2 * head_dim} (heads of {head_dim}, K = H/2), got {width}")
    heads = width // head_dim
    return Llama4Config.preset("toy").replace(
        hidden_size=width, num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=head_dim,
        intermediate_size=2 * width, intermediate_size_mlp=4 * width, num_hidden_layers=depth,
        parametrization=parametrization, base_hidden_size=base[0], base_num_layers=base[1])


def _rms(x: torch.Tensor) -> float:
    return x.float().pow(2).mean().sqrt().item()


def _log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: 0 = flat, 1 = proportional."""
    lx = torch.tensor(xs, dtype=torch.float64).log()
    ly = torch.tensor(ys, dtype=torch.float64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


@torch.no_grad()
def _activations(model: Llama4, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every decoder layer's output and the logits for the batch x."""
    outs = {}
    hooks = [layer.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(f"layer {i}", out[0]))
             for i, layer in enumerate(model.layers)]
    try:
        outs["logits"] = model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def coord_check(parametrization: str, widths: tuple[int, ...] = COORD_WIDTHS, depth: int = 2, steps: int = 5,
                lr: float = 3e-3, batch_size: int = 8, seq_len: int = 64, seed: int = 0) -> dict:
    """Train each width for `steps` steps at a constant learning rate (AdamW as in pretraining) and measure, on one
    fixed batch, each layer's output and the logits: their RMS at the end ("rms") and the RMS of their change since
    init ("delta"). Under a parametrisation that transfers, both stay flat as the width grows.

    Returns {"widths", "steps", "lr", "rms": {name: [per width]}, "delta": {name: [per width]},
    "slope": {"rms" | "delta": {name: log-log slope against width}}}."""
    ids = course_tokens("train").ids
    x_fixed, _ = get_batch(ids, batch_size, seq_len, torch.Generator().manual_seed(seed + 1))
    tc = TrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed)
    rms: dict[str, list[float]] = {}
    delta: dict[str, list[float]] = {}
    for width in widths:
        seed_everything(seed)
        model = Llama4(sweep_config(width, depth, parametrization, base=(min(widths), depth)))
        before = _activations(model, x_fixed)
        opt, g = make_optimizer(model, tc), torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            x, y = get_batch(ids, batch_size, seq_len, g)
            optimizer_step(opt, lm_loss(model, x, y, tc)[0], model, tc.grad_clip, lr=lr)
        model.eval()
        after = _activations(model, x_fixed)
        for name, a in after.items():
            rms.setdefault(name, []).append(_rms(a))
            delta.setdefault(name, []).append(_rms(a - before[name]))
    return {"widths": list(widths), "steps": steps, "lr": lr, "rms": rms, "delta": delta,
            "slope": {"rms": {k: _log_slope(widths, v) for k, v in rms.items()},
                      "delta": {k: _log_slope(widths, v) for k, v in delta.items()}}}


# ------------------------------------------------------------------------------------------------ the LR sweep
@dataclass(frozen=True)
class SweepSpec:
    widths: tuple[int, ...]  # hidden sizes D (an 8x range at least)
    depths: tuple[int, ...]  # numbers of layers L
    lrs: tuple[float, ...]  # the learning-rate grid (log-spaced, factor 2)
    steps: int  # optimizer steps per run
    batch_size: int  # sequences per step
    seq_len: int  # tokens per sequence
    warmup_steps: int  # linear warm-up, then cosine decay to lr / 10
    head_dim: int = HEAD_DIM  # every width keeps this head size (H = D / head_dim)
    eval_batches: int = 8  # batches of the final validation estimate
    seed: int = 0  # the same init seed and batch order for every run
    parametrizations: tuple[str, ...] = ("standard", "metap")


def sweep_spec(profile: str | None = None, seed: int = 0) -> SweepSpec:
    """The sweep each profile runs: widths 16 → 128 (8x) at two depths, a factor-2 grid of learning rates. `seed`
    is 0 in the course; `bench/model_claims_spread.py` runs others."""
    spec = by_profile(
        ci=SweepSpec(widths=(16, 32, 64, 128), depths=(1, 2), lrs=tuple(2.0 ** -k for k in range(10, 2, -1)),
                     steps=150, batch_size=8, seq_len=32, warmup_steps=15, head_dim=8),
        laptop=SweepSpec(widths=(16, 32, 64, 128), depths=(2, 4), lrs=tuple(2.0 ** -k for k in range(10, 2, -1)),
                         steps=300, batch_size=8, seq_len=64, warmup_steps=30, head_dim=8),
        profile=profile)
    return replace(spec, seed=seed)


def run_train_config(spec: SweepSpec, lr: float) -> TrainConfig:
    """The training settings of one run: peak `lr`, warm-up, cosine decay to lr / 10, one evaluation at the end."""
    return TrainConfig(steps=spec.steps, batch_size=spec.batch_size, seq_len=spec.seq_len, lr=lr, min_lr=lr / 10,
                       warmup_steps=spec.warmup_steps, eval_every=spec.steps, eval_batches=spec.eval_batches,
                       seed=spec.seed)


def sweep_run(spec: SweepSpec, parametrization: str, width: int, depth: int, lr: float) -> dict:
    """One training run of the sweep: {"val_loss" (inf if it diverged), "train_loss" (last 10 steps' mean),
    "cpu_seconds"}."""
    t0 = time.process_time()
    seed_everything(spec.seed)
    base = (min(spec.widths), min(spec.depths))  # the smallest model is the base shape: tuned there, transferred up
    model = Llama4(sweep_config(width, depth, parametrization, base, spec.head_dim))
    hist = train(model, course_tokens("train").ids, course_tokens("val").ids, run_train_config(spec, lr),
                 progress=False)
    val = hist.val_loss[-1]
    tail = hist.train_loss[-10:]
    return {"val_loss": val if math.isfinite(val) else math.inf, "train_loss": sum(tail) / len(tail),
            "cpu_seconds": time.process_time() - t0}


def _sweep_dir(spec: SweepSpec, profile: str):
    """The folder of a sweep's runs, under a key (cachekey.py) over what a run depends on: the spec but the grid
    itself (a run's learning rate and parametrization are in its file name, so widening the grid keeps the runs
    made), the training data, the code of this file and of what it imports (the model, training, MetaP's rules),
    and the runtime (torch version, thread count)."""
    run_spec = {k: v for k, v in asdict(spec).items() if k not in ("lrs", "parametrizations")}
    payload = {"spec": run_spec, "profile": profile,
               "data": hashlib.sha256(course_tokens("train").ids.numpy().tobytes()).hexdigest()}
    return cache_dir() / "metap" / f"lr-sweep-{profile}-{cache_key(payload, __name__)}"


def lr_sweep(profile: str | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Every run of the profile's sweep, each trained on first use and cached on its own: an interrupted sweep
    resumes, and processes started on the same sweep share out the runs. Returns {"spec": …, "profile": …,
    "runs": [{"parametrization", "width", "depth", "lr", "val_loss", "train_loss", "cpu_seconds"}, …]}."""
    from tqdm.auto import tqdm

    profile = profile or current_profile()
    spec = sweep_spec(profile, seed)
    folder = _sweep_dir(spec, profile)
    folder.mkdir(parents=True, exist_ok=True)
    grid = [(p, d, w, lr) for p in spec.parametrizations for d in spec.depths for w in spec.widths for lr in spec.lrs]
    paths = [folder / f"{p}-L{d}-D{w}-lr{lr:.3e}.json" for p, d, w, lr in grid]
    busy = []  # runs another process is training: read them at the end
    for (p, d, w, lr), path in zip(tqdm(grid, desc="LR sweep", disable=not progress, mininterval=1.0), paths):
        if not _train_run_unless_busy(spec, (p, w, d, lr), path):
            busy.append(path)
    for path in busy:
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # wait for the other process to finish it
    runs = [{"parametrization": p, "width": w, "depth": d, "lr": lr, **json.loads(path.read_text())}
            for (p, d, w, lr), path in zip(grid, paths)]
    return {"spec": asdict(spec), "profile": profile, "runs": runs}


def _train_run_unless_busy(spec: SweepSpec, run: tuple, path) -> bool:
    """Train one run into `path` unless it is there already; False if another process holds it."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(sweep_run(spec, *run)))
            tmp.replace(path)
    return True


def loss_curves(sweep: dict, key: str = "val_loss") -> dict[tuple[str, int, int], list[float]]:
    """{(parametrization, depth, width): [loss at each grid learning rate]}."""
    curves: dict[tuple[str, int, int], list[float]] = {}
    for r in sweep["runs"]:
        curves.setdefault((r["parametrization"], r["depth"], r["width"]), []).append(r[key])
    return curves


def best_lrs(sweep: dict, key: str = "val_loss") -> dict[tuple[str, int], dict]:
    """Where the optimum lands. {(parametrization, depth): {"widths", "index" (grid index of the best learning rate
    per width), "lr", "loss" (the best loss per width), "spread" (max - min index: how far the optimum moved)}}."""
    lrs = sweep["spec"]["lrs"]
    out: dict[tuple[str, int], dict] = {}
    for (p, d, w), losses in sorted(loss_curves(sweep, key).items()):
        i = min(range(len(losses)), key=losses.__getitem__)
        row = out.setdefault((p, d), {"widths": [], "index": [], "lr": [], "loss": []})
        row["widths"].append(w)
        row["index"].append(i)
        row["lr"].append(lrs[i])
        row["loss"].append(losses[i])
    for row in out.values():
        row["spread"] = max(row["index"]) - min(row["index"])
    return out
