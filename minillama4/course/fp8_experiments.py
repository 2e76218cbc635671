"""Chapter 14's experiments: FP8 at toy scale, measured, and FP8 at Llama 4 scale, computed.

    run = training_comparison()      # mini-Scout from scratch: float32, bf16 autocast, FP8, FP8 without scaling
    q = quality_comparison()         # float vs FP8 vs int4 experts: held-out questions, validation perplexity
    st = scaling_statistics(model)   # weight and activation statistics (outliers) and the error of each scaling
    h = h100_arithmetic()            # FP8 tensor-core throughput and bytes per token, Scout and Maverick

The first two train or evaluate for minutes, so they are cached (in `cache_dir()/fp8/`, under a fingerprint of their
settings and of the models they start from) and scaled by the profile (MINILLAMA4_PROFILE); the last two are quick.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict

import torch
from torch import nn

from .. import fp8
from ..config import Llama4Config
from ..fp8 import E4M3, E5M2, Fp8Stats, fp8_training
from ..model import Llama4
from ..quant import dequantize_int4, quantize_int4, quantize_model, weight_bytes
from ..train import TrainConfig, evaluate, seed_everything, train
from .cachekey import cached_json
from .data import course_tokens
from .profile import by_profile, current_profile



# --------------------------------------------------------------------------------------------- training in FP8
class Autocast(nn.Module):
    """A model whose forward runs under torch.autocast: matmuls in `dtype` (bf16), master weights float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    @property
    def config(self):  # the wrapped model's, which the training loop reads (make_optimizer)
        return self.model.config

    def forward(self, *args, **kwargs):
        with torch.autocast(self.model.device.type, dtype=self.dtype):
            return self.model(*args, **kwargs)


PRECISIONS = ("float32", "bf16", "fp8", "fp8 unscaled")  # the variants of training_comparison


def training_setup(profile: str | None = None, seed: int = 0) -> tuple[Llama4Config, TrainConfig]:
    """The model (mini-Scout's config) and the training settings of the comparison, scaled by the profile. `seed`
    (init and batch order) is 0 in the course; `bench/model_claims_spread.py` runs others."""
    p = profile or current_profile()
    steps = by_profile(ci=80, laptop=200, profile=p)
    tc = TrainConfig(steps=steps, batch_size=by_profile(ci=8, laptop=16, profile=p),
                     seq_len=by_profile(ci=64, laptop=128, profile=p), lr=3e-3, min_lr=3e-4, warmup_steps=steps // 5,
                     eval_every=steps // 8, eval_batches=by_profile(ci=4, laptop=8, profile=p), balance_coef=0.01,
                     seed=seed)
    return Llama4Config.preset("toy"), tc


def train_in_precision(precision: str, config: Llama4Config, tc: TrainConfig, train_ids, val_ids,
                       progress: bool = False) -> dict:
    """Train mini-Scout from scratch (same init, same batches for every precision) → {"history", "fp8_stats",
    "seconds"}. "float32": the reference; "bf16": matmuls under bf16 autocast; "fp8": `fp8_training` (e4m3 forward,
    e5m2 gradients, current scaling); "fp8 unscaled": the same casts with every scale 1."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    seed_everything(tc.seed)
    model = Llama4(config)
    stats = Fp8Stats() if precision.startswith("fp8") else None
    if stats is not None:
        fp8_training(model, scaled=precision == "fp8", stats=stats)
    run = Autocast(model) if precision == "bf16" else model
    t0 = time.perf_counter()
    hist = train(run, train_ids, val_ids, tc, progress=progress, desc=precision)
    return {"history": hist.to_dict(), "fp8_stats": stats.fractions() if stats else None,
            "seconds": time.perf_counter() - t0}


def training_comparison(profile: str | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Every precision of PRECISIONS at equal steps, cached. → {"profile", "train": the TrainConfig as a dict,
    "variants": {precision: train_in_precision(...)}}; `final_gaps` summarises it."""
    p = profile or current_profile()
    config, tc = training_setup(p, seed)
    train_data = course_tokens("train", vocab_size=config.vocab_size)
    val_data = course_tokens("val", vocab_size=config.vocab_size)

    def compute():
        return {"profile": p, "train": asdict(tc),
                "variants": {v: train_in_precision(v, config, tc, train_data.ids, val_data.ids, progress)
                             for v in PRECISIONS}}

    data = hashlib.sha256(train_data.ids.numpy().tobytes()).hexdigest()[:12]
    return cached_json("fp8", f"training-{p}", {"config": asdict(config), "train": asdict(tc), "variants": PRECISIONS,
                                               "data": data}, compute, __name__)


def final_gaps(run: dict, last: int = 2) -> dict:
    """Validation loss of each precision minus float32's, averaged over the last `last` evaluations."""
    final = {v: sum(r["history"]["val_loss"][-last:]) / last for v, r in run["variants"].items()}
    return {v: final[v] - final["float32"] for v in final}


# --------------------------------------------------------------------------------------------- FP8 vs int4 vs float
QUALITY_VARIANTS = {"float32": None, "fp8": {"quantize": "fp8"}, "int4": {"quantize": "int4"}}  # quantize_model's kwargs


def _quantized(model: Llama4, settings: dict | None) -> Llama4:
    """A copy of model with its experts quantized by `quantize_model(copy, **settings)` (None: the float model)."""
    if settings is None:
        return model
    q = Llama4(model.config)
    q.load_state_dict(model.state_dict())
    quantize_model(q, **settings)
    return q.eval()


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@torch.no_grad()
def logit_agreement(ref: Llama4, model: Llama4, windows: list[torch.Tensor]) -> dict:
    """How far model's next-token predictions are from ref's on token windows [B, T]: relative RMS error of the
    logits, the share of positions with the same most likely token, and the mean KL(ref ‖ model) in nats."""
    err = norm = kl = same = n = 0.0
    for x in windows:
        a, b = ref(x).float(), model(x).float()
        err, norm = err + (b - a).square().sum().item(), norm + a.square().sum().item()
        kl += torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True,
                                         reduction="sum").item()
        same += (a.argmax(-1) == b.argmax(-1)).sum().item()
        n += x.numel()
    return {"logit_rel_rms": math.sqrt(err / norm), "top1_agreement": same / n, "kl": kl / n}


def quality_comparison(profile: str | None = None, progress: bool = True, variants: dict | None = None,
                       seed: int = 0) -> dict:
    """The chat model of chapter 10 (pretrained → SFT → RL → DPO) with float32, FP8 (e4m3, row-wise) or int4 (g=128)
    experts on the held-out questions: accuracy, format rate, and the share of greedy replies identical to float32's;
    and the pretrained mini-Scout with the same three kinds of experts on the validation text: loss, perplexity and
    `logit_agreement` with float32; plus the chat model's weight bytes. Cached. → {"variants": {name: {...}}}.
    variants: {name: quantize_model's keyword arguments, or None for float32} (default QUALITY_VARIANTS); the first
    one is the float32 reference the others are compared with. `seed`: which pipeline's models (0 in the course)."""
    from ..train import get_batch, posttrain, rollout
    from . import zoo
    from .data import course_tokenizer
    from .tasks import eval_set

    p = profile or current_profile()
    variants = QUALITY_VARIANTS if variants is None else variants
    ref_name = next(iter(variants), None)
    if ref_name is None or variants[ref_name] is not None:
        raise ValueError(f"the first variant must be the float32 reference (None), got {variants!r}")
    chat, chat_rec = posttrain.stage("dpo", p, progress, seed)
    base, base_hist = zoo.pretrained("mini-scout", profile=p, verbose=progress, seed=seed)
    r = posttrain.recipe(p, seed)
    tc = zoo.recipes(p, seed)["mini-scout"].train

    def compute():
        tok, tasks = course_tokenizer(), eval_set(r.eval_per_level)
        val = course_tokens("val", vocab_size=base.config.vocab_size).ids
        g = torch.Generator().manual_seed(10_000 + tc.seed)  # the windows `evaluate` uses
        windows = [get_batch(val, tc.batch_size, tc.seq_len, g)[0] for _ in range(tc.eval_batches)]
        replies = {}
        out = {"profile": p, "questions": len(tasks), "variants": {}}
        for name, settings in variants.items():
            m, b = _quantized(chat, settings), _quantized(base, settings)
            t0 = time.process_time()
            metrics = rollout.evaluate(m, tok, tasks)
            replies[name] = [rs[0].reply for rs in rollout.rollouts(m, tok, tasks)]
            val_loss, _ = evaluate(b, val, tc)
            out["variants"][name] = {
                "accuracy": metrics["accuracy"], "format_rate": metrics["format_rate"],
                "accuracy_by_level": metrics["accuracy_by_level"],
                "same_replies": sum(a == c for a, c in zip(replies[name], replies[ref_name])) / len(tasks),
                "val_loss": val_loss, "val_perplexity": math.exp(val_loss), **logit_agreement(base, b, windows),
                "weight_bytes": weight_bytes(m), "cpu_seconds": time.process_time() - t0}
        return out

    return cached_json("fp8", f"quality-{p}", {"chat": _fingerprint(chat_rec["metrics"]),
                                               "base": _fingerprint(base_hist.to_dict()),
                                               "eval_per_level": r.eval_per_level, "val": asdict(tc),
                                               "variants": variants}, compute, __name__)


# --------------------------------------------------------------------------------------------- statistics
def rel_rms(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """‖x̂ − x‖ / ‖x‖."""
    return ((x_hat.float() - x.float()).norm() / x.float().norm().clamp_min(1e-30)).item()


SCHEMES = ("e4m3 tensor", "e4m3 row", "e4m3 column", "e4m3 block", "e5m2 row", "int4 g128")


def scheme_errors(x_NK: torch.Tensor) -> dict:
    """Relative RMS error of each scheme of SCHEMES on a matrix (rows = output channels of a weight, or tokens of an
    activation); None where the shape does not allow the scheme (blocks and int4 groups need multiples of 128)."""
    out = {}
    for name in SCHEMES:
        fmt, gran = name.split()
        N, K = x_NK.shape
        if (gran == "block" and (N % fp8.BLOCK or K % fp8.BLOCK)) or (fmt == "int4" and K % 128):
            out[name] = None
        elif fmt == "int4":
            out[name] = rel_rms(dequantize_int4(*quantize_int4(x_NK, 128)), x_NK)
        else:
            out[name] = rel_rms(fp8.dequantize(*fp8.quantize(x_NK, E4M3 if fmt == "e4m3" else E5M2, gran)), x_NK)
    return out


def tensor_statistics(name: str, x_NK: torch.Tensor) -> dict:
    """Size and shape of a value distribution: amax, RMS, amax / RMS (how far the largest value sticks out; a
    Gaussian of this many values reaches about 4–5), kurtosis (3 for a Gaussian; larger: heavy tails), the largest
    row and column amax over their median (outlier rows / channels), and the error of every scaling scheme."""
    x = x_NK.float()
    rms = x.square().mean().sqrt().item()
    row_amax, col_amax = x.abs().amax(1), x.abs().amax(0)
    return {"name": name, "shape": list(x.shape), "amax": x.abs().max().item(), "rms": rms,
            "crest": x.abs().max().item() / max(rms, 1e-30),
            "kurtosis": ((x - x.mean()) ** 4).mean().item() / max(x.var(unbiased=False).item() ** 2, 1e-30),
            "row_outlier": (row_amax.max() / row_amax.median().clamp_min(1e-30)).item(),
            "column_outlier": (col_amax.max() / col_amax.median().clamp_min(1e-30)).item(),
            "errors": scheme_errors(x)}


def _weights(model: Llama4):
    """(name, W [out, in]) of every matrix a FP8 recipe would quantize: the experts, the shared experts, attention."""
    for i, layer in enumerate(model.layers):
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"layers.{i}.self_attn.{n}", getattr(layer.self_attn, n).weight
        ffn = layer.feed_forward
        if layer.is_moe:
            for e in range(ffn.experts.num_experts):
                yield f"layers.{i}.experts.{e}.gate_up", ffn.experts.gate_up_proj[e].t()
                yield f"layers.{i}.experts.{e}.down", ffn.experts.down_proj[e].t()
            ffn = ffn.shared_expert
        for n in ("gate_proj", "up_proj", "down_proj"):
            yield f"layers.{i}.{'shared' if layer.is_moe else 'mlp'}.{n}", getattr(ffn, n).weight


@torch.no_grad()
def scaling_statistics(model: Llama4, ids: torch.Tensor) -> dict:
    """The numbers the chapter plots: `tensor_statistics` of every quantizable weight, and of the activations that
    enter the linears on a batch of tokens ids [B, T] (the attention input, the attention output that o_proj
    reads, the MoE input, the shared expert's down_proj input), plus the per-channel amax of each activation.
    → {"weights": [...], "activations": [...], "channel_amax": {name: [D floats]}}."""
    acts = {}

    def grab(name):
        return lambda mod, args: acts.__setitem__(name, args[0].reshape(-1, args[0].shape[-1]).detach().float())

    hooks = []
    for i, layer in enumerate(model.layers):
        hooks.append(layer.self_attn.q_proj.register_forward_pre_hook(grab(f"layers.{i}.attention input")))
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(grab(f"layers.{i}.o_proj input")))
        if layer.is_moe:
            hooks.append(layer.feed_forward.register_forward_pre_hook(grab(f"layers.{i}.moe input")))
            hooks.append(layer.feed_forward.shared_expert.down_proj.register_forward_pre_hook(
                grab(f"layers.{i}.shared down_proj input")))
    try:
        model.eval()(ids)
    finally:
        for h in hooks:
            h.remove()
    return {"weights": [tensor_statistics(n, w.detach()) for n, w in _weights(model)],
            "activations": [tensor_statistics(n, a) for n, a in acts.items()],
            "channel_amax": {n: a.abs().amax(0).tolist() for n, a in acts.items()}}


def outlier_sweep(x_NK: torch.Tensor, factors=(1, 10, 100, 1e3, 1e4, 1e5, 1e6), axis: str = "column",
                  index: int = 0) -> dict:
    """What one outlier does to each scheme of SCHEMES: scale column `index` (a channel: the same for every token,
    like the outlier features of large language models) or row `index` (one token) of x by each factor, quantize,
    and measure the relative RMS error of everything else (the outlier itself always comes out fine).
    → {"factors": [...], "errors": {scheme: [one error per factor, None where the shape rules it out]}}."""
    if axis not in ("row", "column"):
        raise ValueError(f"axis must be 'row' or 'column', got {axis!r}")
    others = torch.ones_like(x_NK, dtype=torch.bool)
    (others[index] if axis == "row" else others[:, index]).fill_(False)
    errors = {name: [] for name in SCHEMES}
    for f in factors:
        x = x_NK.float().clone()
        (x[index] if axis == "row" else x[:, index]).mul_(f)
        for name in SCHEMES:
            fmt, gran = name.split()
            N, K = x.shape
            if (gran == "block" and (N % fp8.BLOCK or K % fp8.BLOCK)) or (fmt == "int4" and K % 128):
                errors[name].append(None)
                continue
            x_hat = (dequantize_int4(*quantize_int4(x, 128)) if fmt == "int4" else
                     fp8.dequantize(*fp8.quantize(x, E4M3 if fmt == "e4m3" else E5M2, gran)))
            errors[name].append(rel_rms(x_hat[others], x[others]))
    return {"factors": list(factors), "axis": axis, "errors": errors}


# --------------------------------------------------------------------------------------------- H100 arithmetic
H100_SXM = {  # NVIDIA's H100 SXM5 datasheet, dense (the datasheet's headline numbers assume 2:4 sparsity: halve them)
    "bf16_tflops": 989.4,  # bf16 tensor cores, dense
    "fp8_tflops": 1978.9,  # FP8 tensor cores, dense: twice bf16
    "hbm_bytes_per_s": 3.35e12,  # HBM3
    "memory_bytes": 80e9,
}
BEHEMOTH_FP8_TFLOPS = 390  # what Meta reports per GPU for Behemoth's FP8 pre-training


def expert_bytes(config: Llama4Config, precision: str) -> int:
    """Bytes of one expert (gate and up [F, D], down [D, F]) in "bf16", "fp8" (e4m3, one float32 scale per output
    row) or "int4" (g = 128, one float32 scale per group)."""
    from ..fp8 import fp8_bytes
    from ..quant import int4_bytes

    D, F_ = config.hidden_size, config.intermediate_size
    if precision == "bf16":
        return 3 * D * F_ * 2
    if precision == "fp8":
        return fp8_bytes(2 * F_, D) + fp8_bytes(D, F_)
    if precision == "int4":
        return int4_bytes(2 * F_, D) + int4_bytes(D, F_)
    raise ValueError(f"precision must be 'bf16', 'fp8' or 'int4', got {precision!r}")


def decode_bytes_per_token(config: Llama4Config, precision: str) -> int:
    """Weight bytes one batch-1 decode step reads: every weight on one token's path (attention, router, norms,
    lm_head, the shared expert and k routed experts per MoE layer, dense FFNs), not the embedding table (one row of
    it). Experts (routed and shared) in `precision`, every other weight in bf16. KV cache not included."""
    D, F_ = config.hidden_size, config.intermediate_size
    experts = len(config.moe_layers) * (config.num_experts_per_tok + 1)  # k routed + the shared expert per MoE layer
    rest = config.num_parameters(active=True) - experts * 3 * D * F_ - config.vocab_size * D  # minus embedding table
    return experts * expert_bytes(config, precision) + rest * 2


def h100_arithmetic() -> dict:
    """FP8 on an H100, computed (not measured): the tensor-core speed-up, what Behemoth's 390 TFLOPs per GPU are as a
    fraction of the FP8 peak, and for Scout and Maverick with experts in bf16, FP8 and int4: total weight bytes, GPUs
    of 80 GB needed for the weights alone, bytes one batch-1 decode token reads, and the tokens/s that bandwidth
    allows; plus the compute-bound prefill tokens/s (2 FLOPs per active parameter) at the bf16 and FP8 peaks."""
    from ..fp8 import expected_fp8_bytes
    from ..quant import expected_int4_bytes

    h = H100_SXM
    out = {"fp8_over_bf16_flops": h["fp8_tflops"] / h["bf16_tflops"],
           "behemoth_mfu_fp8": BEHEMOTH_FP8_TFLOPS / h["fp8_tflops"], "models": {}}
    for name in ("scout", "maverick"):
        cfg = Llama4Config.preset(name)
        total = {"bf16": cfg.num_parameters() * 2, "fp8": expected_fp8_bytes(cfg), "int4": expected_int4_bytes(cfg)}
        active = cfg.num_parameters(active=True)
        m = {"params": cfg.num_parameters(), "active_params": active,
             "prefill_tokens_per_s": {"bf16": h["bf16_tflops"] * 1e12 / (2 * active),
                                      "fp8": h["fp8_tflops"] * 1e12 / (2 * active)}}
        for prec in ("bf16", "fp8", "int4"):
            bpt = decode_bytes_per_token(cfg, prec)
            m[prec] = {"weight_bytes": total[prec], "gpus_80gb": math.ceil(total[prec] / h["memory_bytes"]),
                       "decode_bytes_per_token": bpt, "decode_tokens_per_s": h["hbm_bytes_per_s"] / bpt}
        out["models"][name] = m
    return out

