"""Chapter 11's experiment: what int4 costs the post-trained toy chat model, measured like a user would.

    q = int4_quality()   # float32 vs int4 experts at each group size, with symmetric and asymmetric scales

Every variant answers the held-out questions (accuracy, format rate) and reads the validation text (perplexity):
the measurement of chapter 14's `fp8_experiments.quality_comparison`, cached the same way (in `cache_dir()/fp8/`).
"""

from __future__ import annotations

from .fp8_experiments import quality_comparison

# Group sizes the toy's experts take: gate and up read D = 128 inputs, so 128 is one scale per row there and a
# group of 256 does not fit (only down, with F = 256 inputs, could take it).
GROUP_SIZES = (32, 64, 128)


def variant_name(group_size: int, symmetric: bool) -> str:
    return f"int4 g{group_size} {'sym' if symmetric else 'asym'}"


def variants() -> dict:
    """{name: quantize_model's keyword arguments}: float32 first (the reference), then every group size with
    symmetric and asymmetric scales."""
    out = {"float32": None}
    for symmetric in (True, False):
        for g in GROUP_SIZES:
            out[variant_name(g, symmetric)] = {"quantize": "int4", "group_size": g, "symmetric": symmetric}
    return out


def int4_quality(profile: str | None = None, progress: bool = True, seed: int = 0) -> dict:
    """`quality_comparison` over `variants()`, cached. → {"profile", "questions", "variants": {name: {"accuracy",
    "format_rate", "same_replies", "val_loss", "val_perplexity", "logit_rel_rms", "top1_agreement", "kl",
    "weight_bytes", …}}}."""
    return quality_comparison(profile, progress, variants=variants(), seed=seed)
