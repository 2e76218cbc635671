"""The course's diagrams: each mechanism drawn in code from its config (or a worked example's real numbers), so a
picture can never disagree with the model it shows.

    decoder_block       one decoder layer: RMSNorm → attention → add, then RMSNorm → FFN (MoE or dense) → add
    layer_stack         every layer of a config: RoPE (chunked) or NoPE (global) attention, MoE or dense FFN
    dispatch_example    a few real tokens: sort by expert (argsort) → one matmul per expert → scatter-add back
    shared_routed_moe   x → shared expert, and x → router (top-k, sigmoid) → σ·x → routed expert; the two summed
    attention_patterns  chunked vs global masks, and the positions each kind of layer keeps in its KV cache
    vision_pipeline     image → tiles → patches → ViT → pixel shuffle → adapter → projector → <|patch|> slots
    distillation        teacher → student: soft targets at T (KL · T²) + hard targets (CE), weighted by α(t)
    posttrain_pipeline  judge-pruned SFT data → SFT → online RL (zero-advantage groups dropped) → DPO
    int4_layout         a weight row → groups with one scale each → 4-bit values + 8 → two per byte
    all_to_all          expert parallelism: counts, tokens to their expert's rank, experts run, results back
    number_formats      the bits of fp32, bf16, fp8 e4m3 / e5m2 and int4, with range and precision
    fp8_training_step   one FP8 linear: x, W → e4m3 with amax scales → scaled matmul; ∂y → e5m2 → ∂x, ∂W (float32)
    metap_groups        a decoder layer's weights by MetaP group, each with its init × and lr × for the config

Every number on a diagram is read from the arguments or computed by the package's own code (`attention_mask`,
`moe.dispatch`, `cache.LayerKV`, `quantize_int4` / `pack_int4`, `alpha_at`, `image_prompt`, `torch.finfo`,
`metap.scales`). Each function returns a `viz.VizFigure` (a matplotlib Figure that shows itself as PNG in a
notebook), 9-12 inches wide, in the colours of `viz` (expert e is `expert_color(e)` everywhere; RoPE blue, NoPE
orange). Most diagrams are drawn on one axes whose units are inches. Shapes that stand for one thing carry a gid
("attn:3", "sorted:5", "byte:2", ...), so what a diagram shows can be checked. Bad input raises a ValueError
(TypeError for a wrong kind of config) that names the argument.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.path import Path

from .. import metap
from ..attention import attention_mask
from ..cache import LayerKV, kv_cache_bytes
from ..config import Llama4Config
from ..image import image_prompt
from ..moe import dispatch
from ..quant import QMAX, QMIN, pack_int4, quantize_int4
from ..train.distill import DistillConfig, alpha_at, student_train_config
from ..train.dpo import DPOConfig
from ..train.posttrain import recipe as posttrain_recipe
from ..train.rl import RLConfig
from ..train.sft import SFTConfig
from ..vision import VisionConfig
from .viz import (CHUNK_LINE, MASK_ATTENDS, MASK_MASKED, MONO, NOPE_COLOR, ROPE_COLOR, VizFigure, _check_experts,
                  _float, _ints, _text_color, expert_color, show_token)

FS = 9.5  # text size of box labels (points)
NORM_COLOR = "#c9a227"  # RMSNorm
ROUTER_COLOR = "#6a3d9a"  # the router
SHARED_COLOR = "#3a3a3a"  # the shared expert (no expert colour is this dark)
MOE_COLOR, DENSE_COLOR = "#2e7d32", "#8c8c8c"  # MoE / dense feed-forward layers
DROP_COLOR = "#b0b0b0"  # what is thrown away: pruned data, dropped groups, evicted cache entries
SIGN_COLOR, EXP_COLOR, MANT_COLOR = "#c44e52", "#4c72b0", "#55a868"  # bit fields of a number format


# --------------------------------------------------------------------------------------------------- drawing kit
def _canvas(width: float, height: float, title: str | None = None):
    """A figure with one frameless axes whose data units are inches: (0, 0) bottom left, (width, height) top right."""
    fig = VizFigure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    if title:
        ax.text(width / 2, height - 0.3, title, ha="center", va="center", fontsize=12.5, weight="bold")
    return fig, ax


def _fit_height(fig, ax, top: float, title: str) -> None:
    """Cut a canvas to its content (which ends at height `top`) and put the title above it."""
    fig.set_size_inches(fig.get_size_inches()[0], top + 0.75)
    ax.set_ylim(0, top + 0.75)
    ax.text(fig.get_size_inches()[0] / 2, top + 0.45, title, ha="center", va="center", fontsize=12.5, weight="bold")


def _tint(color, amount: float) -> tuple[float, float, float]:
    """color mixed with white: amount 1 = the colour itself, 0 = white."""
    return tuple(1 - amount * (1 - c) for c in to_rgb(color))


def _box(ax, x, y, w, h, text="", color="0.35", fill=0.15, gid=None, fs=FS, dashed=False, round_=True, face=None,
         **text_kw):
    """A labelled box with lower-left corner (x, y): edge in color, face a light tint of it (or the colour face)."""
    face = _tint(color, fill) if face is None else to_rgb(face)
    style = f"round,pad=0,rounding_size={min(0.08, w / 3, h / 3)}" if round_ else "square,pad=0"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, fc=face, ec=color, lw=1.2,
                                ls=(0, (4, 2)) if dashed else "-", gid=gid))
    if text:
        kw = dict(ha="center", va="center", fontsize=fs, color=_text_color((*face, 1.0)), linespacing=1.35,
                  parse_math=False, gid=gid)
        ax.text(x + w / 2, y + h / 2, text, **{**kw, **text_kw})


def _arrow(ax, *points, color="0.25", lw=1.3, head=True, ls="-", alpha=1.0, gid=None, zorder=2):
    """A polyline through points, with an arrow head at the last one (or none)."""
    ax.add_patch(FancyArrowPatch(path=Path(np.asarray(points, dtype=float)), arrowstyle="-|>" if head else "-",
                                 mutation_scale=11, color=color, lw=lw, ls=ls, alpha=alpha, shrinkA=0, shrinkB=0,
                                 gid=gid, zorder=zorder))


def _op(ax, x, y, symbol: str, r: float = 0.17, gid=None):
    """A circled operator (+ or ×) centred on (x, y)."""
    ax.add_patch(Circle((x, y), r, fc="white", ec="0.2", lw=1.3, zorder=3, gid=gid))
    ax.text(x, y, symbol, ha="center", va="center", fontsize=13, zorder=4)


def _label(ax, x, y, text, fs=FS, **kw):
    """Free text, centred on (x, y) unless kw says otherwise."""
    kw = {"ha": "center", "va": "center", "fontsize": fs, "linespacing": 1.35, "parse_math": False, **kw}
    ax.text(x, y, text, **kw)


def _si(n: float) -> str:
    """109B, 17.2B, 3.41M, 512: a count in the units a reader compares."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    """2.04 GiB, 88 KiB: a size in binary units."""
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:g} B"


def _check_config(cfg, name: str = "cfg") -> None:
    if not isinstance(cfg, Llama4Config):
        raise TypeError(f"{name} must be a Llama4Config (e.g. Llama4Config.preset('scout')), got {type(cfg).__name__}")


def _check_int(v, name: str, lo: int, hi: int | None = None) -> int:
    """v as an int, or a ValueError naming it when it is not an int in [lo, hi]."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an int in [{lo}, {'∞' if hi is None else hi}], got {v!r}")
    return int(v)


def _ffn_text(cfg: Llama4Config) -> str:
    D, F = cfg.hidden_size, cfg.intermediate_size
    return f"SwiGLU {D} → {F} → {D}"


# --------------------------------------------------------------------------------------------------- 1. the layer
def _stack(ax, cx, y, w, steps, gap=0.32):
    """Boxes (text, colour, gid, dashed) stacked upwards from y, centred on cx, joined by arrows.
    Returns the (bottom, top) of each box."""
    spans = []
    for i, (text, color, gid, dashed) in enumerate(steps):
        h = 0.28 + 0.2 * (text.count("\n") + 1)
        if i:
            _arrow(ax, (cx, y - gap), (cx, y))
        _box(ax, cx - w / 2, y, w, h, text, color, gid=gid, dashed=dashed)
        spans.append((y, y + h))
        y += h + gap
    return spans


def _frame(ax, x, y, w, h, label, color, gid):
    """A light rounded frame around a group of boxes, its label at the top left."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.15", fc=_tint(color, 0.06),
                                ec=color, lw=1.0, zorder=0, gid=gid))
    _label(ax, x + 0.12, y + h - 0.2, label, fs=FS, ha="left", color=color, weight="bold")


def _experts_row(ax, x, y, w, h, E: int):
    """Mini boxes for experts 0 … E-1 (first five, …, last one when E > 8), in their colours."""
    shown = list(range(E)) if E <= 8 else [0, 1, 2, 3, 4, None, E - 1]
    cell = w / len(shown)
    for j, e in enumerate(shown):
        if e is None:
            _label(ax, x + (j + 0.5) * cell, y + h / 2, "…", fs=12)
            continue
        _box(ax, x + j * cell + 0.04, y, cell - 0.08, h, f"e{e}", expert_color(e), fill=0.45, gid=f"expert:{e}",
             fs=8.5)


def decoder_block(cfg: Llama4Config, layer_idx: int, title: str | None = None) -> VizFigure:
    """One decoder layer of cfg with its two residual branches:
        h ← h + Attention(RMSNorm(h));   h ← h + FFN(RMSNorm(h)).
    The attention shows the layer's kind (RoPE with chunked mask and QK-norm, or NoPE with global mask and
    temperature tuning) and its GQA heads; the FFN is the MoE (router, shared expert, routed experts) or a dense
    SwiGLU. Every size is the config's."""
    _check_config(cfg)
    L = cfg.num_hidden_layers
    layer_idx = _check_int(layer_idx, "layer_idx", 0, L - 1)
    D, H, K, Dh, E, k = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                         cfg.num_local_experts, cfg.num_experts_per_tok)
    rope, moe = cfg.uses_rope(layer_idx), cfg.is_moe_layer(layer_idx)
    C = cfg.attention_chunk_size if cfg.is_chunked(layer_idx) else None
    kind_color = ROPE_COLOR if rope else NOPE_COLOR
    kind = ("RoPE, chunked" if C else "RoPE, global") if rope else "NoPE, global"
    fig, ax = _canvas(12.0, 9.0)
    y0, x_add1, x_add2 = 1.15, 5.75, 11.35  # the residual stream and its two additions

    # the residual stream, and each branch leaving it
    _arrow(ax, (0.25, y0), (11.8, y0), lw=2.4, color="0.15")
    _label(ax, 0.25, y0 - 0.3, f"residual stream h  [T, D = {D}]", ha="left")
    _label(ax, 11.8, y0 - 0.3, f"→ layer {layer_idx + 1}" if layer_idx + 1 < L else "→ final RMSNorm, lm_head",
           ha="right")
    _label(ax, 6.0, 0.3, "h ← h + Attention(RMSNorm(h))          h ← h + FFN(RMSNorm(h))", fs=10.5, family=MONO)
    for x in (3.0, 8.6):
        ax.add_patch(Circle((x, y0), 0.05, color="0.15", zorder=3))
        _arrow(ax, (x, y0), (x, 1.7))

    # attention branch
    if rope:
        scaling = cfg.rope_scaling
        pos_step = (f"RoPE on q and k  (θ = {cfg.rope_theta:g}"
                    + (f", llama3 scaling ×{scaling['factor']:g})" if scaling else ")"), kind_color, "rope", False)
    else:
        pos_step = ("NoPE: no position encoding", kind_color, "nope", True)
    steps = [(f"RMSNorm  (D = {D})", NORM_COLOR, "attn-norm", False),
             (f"q, k, v projections:  q {H} heads × {Dh},  k and v {K} kv heads × {Dh}\n"
              f"GQA: every {H // K} query heads share one kv head", kind_color, "qkv", False),
             pos_step]
    if rope and cfg.use_qk_norm:
        steps.append(("QK-norm: weightless RMSNorm of each q and k head", kind_color, "qk-norm", False))
    if not rope and cfg.attn_temperature_tuning:
        steps.append((f"temperature tuning:  q × (1 + {cfg.attn_scale:g}·ln(⌊(p+1)/{cfg.floor_scale}⌋ + 1))",
                      kind_color, "temperature", False))
    mask = (f"chunked causal mask: keys in the query's block of {C} tokens" if C
            else "global causal mask: every earlier key")
    steps += [(f"softmax(q kᵀ / √{Dh} + mask) · v\n{mask}", kind_color, "mask", False),
              (f"o_proj: {H}·{Dh} = {H * Dh} → {D}", kind_color, "o-proj", False)]
    spans = _stack(ax, 3.0, 1.7, 4.3, steps)
    top = attn_top = spans[-1][1]
    _frame(ax, 0.7, spans[1][0] - 0.18, 4.6, top - spans[1][0] + 0.62, f"attention · {kind}", kind_color,
           "attn-frame")
    _arrow(ax, (3.0, top), (3.0, top + 0.55), (x_add1, top + 0.55), (x_add1, y0 + 0.17))
    _op(ax, x_add1, y0, "+")

    # feed-forward branch
    F = cfg.intermediate_size
    nt = _stack(ax, 8.6, 1.7, 2.8, [(f"RMSNorm  (D = {D})", NORM_COLOR, "ffn-norm", False)])[0][1]
    ys = nt + 0.35  # where the normed x splits
    if moe:
        _frame(ax, 6.2, ys - 0.12, 4.95, 4.65, f"MoE: shared expert + {E} routed experts (top-{k})", MOE_COLOR,
               "ffn-frame")
        _arrow(ax, (8.6, nt), (8.6, ys), head=False)
        _arrow(ax, (7.1, ys), (10.2, ys), head=False)
        _arrow(ax, (7.1, ys), (7.1, ys + 0.3))
        _box(ax, 6.35, ys + 0.3, 1.5, 2.5, f"shared\nexpert\n\nevery\ntoken\n\nSwiGLU\n{D}\n→ {F}\n→ {D}",
             SHARED_COLOR, gid="shared", fs=9)
        _arrow(ax, (10.2, ys), (10.2, ys + 0.25))
        _box(ax, 9.35, ys + 0.25, 1.7, 0.8, f"router ({E} logits)\ntop-{k}, score σ(logit)", ROUTER_COLOR,
             gid="router", fs=9)
        xo, yo = 8.75, ys + 1.4  # σ · x: the score scales the expert's input
        _arrow(ax, (8.75, ys), (xo, yo - 0.17))
        _arrow(ax, (10.2, ys + 1.05), (10.2, yo), (xo + 0.17, yo), color=ROUTER_COLOR)
        _label(ax, 9.55, yo + 0.17, "σ", color=ROUTER_COLOR, fs=11)
        _op(ax, xo, yo, "×")
        _label(ax, xo - 0.3, yo, "σ · x", ha="right", fs=9)
        _arrow(ax, (xo, yo + 0.17), (xo, yo + 0.5))
        _box(ax, 8.1, yo + 0.5, 2.95, 1.3, "", MOE_COLOR, fill=0.05, gid="routed")
        _label(ax, 9.575, yo + 1.45, f"routed experts, each\n{_ffn_text(cfg)}", fs=8.5)
        _experts_row(ax, 8.2, yo + 0.6, 2.75, 0.45, E)
        ya = yo + 2.15  # the sum of the two paths
        _arrow(ax, (7.1, ys + 2.8), (7.1, ya), (8.43, ya))
        _arrow(ax, (9.575, yo + 1.8), (9.575, ya), (8.77, ya))
        _op(ax, 8.6, ya, "+")
        top = ya + 0.17
    else:
        Fm = cfg.intermediate_size_mlp
        _frame(ax, 6.2, ys - 0.12, 4.95, 2.6, "dense feed-forward (no experts)", DENSE_COLOR, "ffn-frame")
        _arrow(ax, (8.6, nt), (8.6, ys + 0.3))
        _box(ax, 6.9, ys + 0.3, 3.4, 1.6, f"SwiGLU\ndown( silu(x W_gate) ⊙ x W_up )\n{D} → {Fm} → {D}",
             DENSE_COLOR, gid="dense")
        top = ys + 1.9
    _arrow(ax, (8.6, top), (8.6, top + 0.3), (x_add2, top + 0.3), (x_add2, y0 + 0.17))
    _op(ax, x_add2, y0, "+")
    _fit_height(fig, ax, max(attn_top + 0.7, ys + 4.6 if moe else ys + 2.6),
                title or f"decoder layer {layer_idx} of {L}: {kind} attention + {'MoE' if moe else 'dense'} "
                         "feed-forward")
    return fig


# --------------------------------------------------------------------------------------------------- 2. the stack
def layer_stack(cfg: Llama4Config, title: str | None = None) -> VizFigure:
    """Every layer of cfg, one column each: the attention row (RoPE with chunked attention, or NoPE with global
    attention) above the feed-forward row (MoE or dense). title names the model (e.g. "Llama 4 Scout")."""
    _check_config(cfg)
    L = cfg.num_hidden_layers
    rope = [cfg.uses_rope(i) for i in range(L)]
    moe = [cfg.is_moe_layer(i) for i in range(L)]
    cw = min(0.7, 10.2 / L)
    width = max(9.0, cw * L + 2.0)
    x0 = 1.6 + (width - 2.0 - cw * L) / 2
    head = f"{L} decoder layers: {sum(rope)} RoPE + {L - sum(rope)} NoPE, {sum(moe)} MoE + {L - sum(moe)} dense"
    fig, ax = _canvas(width, 3.5)
    _label(ax, width / 2, 3.2, title or "layer stack", fs=12.5, weight="bold")
    _label(ax, width / 2, 2.85, head, fs=10.5)
    rows = (("attention", 1.85, rope, ROPE_COLOR, NOPE_COLOR, "RN", "attn"),
            ("feed-forward", 1.2, moe, MOE_COLOR, DENSE_COLOR, "MD", "ffn"))
    for name, y, flags, on, off, letters, gid in rows:
        _label(ax, x0 - 0.12, y + 0.28, name, ha="right")
        for i, f in enumerate(flags):
            color = on if f else off
            _box(ax, x0 + i * cw + 0.02, y, cw - 0.04, 0.56, letters[0] if f else letters[1], color, fill=1.0,
                 gid=f"{gid}:{i}", fs=7 if cw < 0.4 else 9, round_=cw >= 0.3)
    every = 1 if cw >= 0.2 else 4
    for i in range(0, L, every):
        _label(ax, x0 + (i + 0.5) * cw, 1.03, str(i), fs=6.5 if cw < 0.4 else 8.5, color="0.3")
    _label(ax, x0 - 0.12, 1.03, "layer", ha="right", fs=8.5, color="0.3")

    C, E, k = cfg.attention_chunk_size, cfg.num_local_experts, cfg.num_experts_per_tok
    tuned = ", temperature-tuned" if cfg.attn_temperature_tuning else ""
    entries = [(ROPE_COLOR, "R", f"RoPE: chunked attention, C = {C}" if C else "RoPE: global attention",
                sum(rope)),
               (NOPE_COLOR, "N", f"NoPE: global attention{tuned}", L - sum(rope)),
               (MOE_COLOR, "M", f"MoE: {E} routed experts (top-{k}) + shared expert", sum(moe)),
               (DENSE_COLOR, "D", f"dense SwiGLU FFN, F = {cfg.intermediate_size_mlp}", L - sum(moe))]
    handles = [Patch(fc=c, ec=c, label=f"{letter}  {text}  (×{n})") for c, letter, text, n in entries if n]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.85 / 3.5), ncol=2, frameon=False,
               fontsize=9.5, handlelength=1.3, columnspacing=2.0)
    return fig


# --------------------------------------------------------------------------------------------------- 3. dispatch
def _token_labels(tokens, T: int) -> list[str]:
    """Token strings (shown visibly, quoted) or token ids ("id 57"), one per token."""
    if isinstance(tokens, str):
        raise ValueError("tokens must be a list of token strings or token ids, not one string")
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        tokens = _ints(tokens, "tokens").reshape(-1).tolist()
    tokens = list(tokens)
    if len(tokens) != T:
        raise ValueError(f"tokens has {len(tokens)} entries but expert_indices routes {T} tokens")
    if all(isinstance(t, str) for t in tokens):
        return [repr(show_token(t)[:10]) for t in tokens]
    if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in tokens):
        return [f"id {int(t)}" for t in tokens]
    raise ValueError("tokens must be all token strings or all token ids")


def dispatch_example(tokens, expert_indices, scores, num_experts: int, title: str | None = None) -> VizFigure:
    """Sparse MoE dispatch of a few real tokens, drawn step by step with the package's `moe.dispatch`:
    1. each token and its top-k (expert, score); 2. the (token, slot) assignments sorted by expert (a stable
    argsort of the expert ids), so each expert's rows are contiguous; 3. one matmul per expert on its rows (σ·x);
    4. each result added back to its token's row (`index_add_` / scatter-add).

    tokens: T token strings or ids; expert_indices [T, k] (or [T]) and scores [T, k] from a router
    (`RouterOutput.indices`, `.scores`); at most 16 tokens and 24 assignments, so every row stays readable."""
    idx = _ints(expert_indices, "expert_indices")
    idx = idx[:, None] if idx.ndim == 1 else idx
    if idx.ndim != 2 or idx.size == 0:
        raise ValueError(f"expert_indices must be [T] or [T, k], got shape {idx.shape}")
    T, k = idx.shape
    sc = _float(scores, "scores", (1, 2)).reshape(-1)
    if sc.size != idx.size:
        raise ValueError(f"scores has {sc.size} entries for expert_indices of shape {idx.shape}")
    if not np.all(np.isfinite(sc)) or np.any(sc < 0) or np.any(sc > 1):
        raise ValueError("scores must lie in [0, 1] (the router's sigmoid scores)")
    E = _check_experts(idx, _check_int(num_experts, "num_experts", 1), "expert_indices")
    if T > 16 or T * k > 24:
        raise ValueError(f"{T} tokens × top-{k} is too many to draw: pass at most 16 tokens and 24 assignments")
    labels = _token_labels(tokens, T)
    token_N, slot_N, counts_E = (t.tolist() for t in dispatch(torch.as_tensor(idx), E))
    flat = idx.reshape(-1)
    N = T * k

    rows_h = max(T, N) * 0.42
    top = rows_h + 1.55
    fig, ax = _canvas(12.0, top + 1.55, title or f"sparse dispatch: {T} tokens, top-{k} of {E} experts")

    def row_y(i, n):  # centre of row i of n, spread over the same height
        return top - (i + 0.5) * rows_h / n

    rh = min(0.34, rows_h / max(T, N) - 0.06)
    heads = ((1.5, "1. tokens, and the router's\ntop-k (expert, score)"),
             (5.45, "2. sorted by expert\n(stable argsort)"),
             (7.5, "3. one matmul\nper expert"), (10.6, "4. scatter-add back\nout.index_add_(0, token, y)"))
    for x, text in heads:
        _label(ax, x, top + 0.4, text, fs=10, weight="bold")
    chip_w = 0.95
    for t in range(T):
        y = row_y(t, T)
        _box(ax, 0.2, y - rh / 2, 1.9, rh, f"{t}: {labels[t]}", "0.35", fill=0.06, gid=f"token:{t}", fs=9,
             family=MONO)
        for j in range(k):
            e = int(idx[t, j])
            _box(ax, 2.2 + j * (chip_w + 0.06), y - rh / 2, chip_w, rh, f"e{e} · {sc[t * k + j]:.2f}",
                 expert_color(e), fill=0.4, gid=f"chip:{t}:{j}", fs=8.5)
    xs = 4.6  # the sorted column
    for n, (slot, t) in enumerate(zip(slot_N, token_N)):
        y, e = row_y(n, N), int(flat[slot])
        _box(ax, xs, y - rh / 2, 1.7, rh, f"{sc[slot]:.2f} · x[{t}]", expert_color(e), fill=0.4,
             gid=f"sorted:{n}:{slot}", fs=9)
        j = slot % k
        _arrow(ax, (2.2 + j * (chip_w + 0.06) + chip_w, row_y(t, T)), (xs, y), color=expert_color(e), lw=1.1,
               alpha=0.75, zorder=0.5)  # under the other chips
    first = 0
    for e, c in enumerate(counts_E):
        if not c:
            continue
        y_hi, y_lo = row_y(first, N) + rh / 2, row_y(first + c - 1, N) - rh / 2
        text = (f"expert {e}: SwiGLU\non its {c} row{'s' if c > 1 else ''}\n[{c}, D] → [{c}, D]" if c > 2
                else f"expert {e}\n[{c}, D] → [{c}, D]")
        _box(ax, 6.6, y_lo, 1.8, y_hi - y_lo, text, expert_color(e), fill=0.25, gid=f"group:{e}", fs=8.5)
        for n in range(first, first + c):
            t = token_N[n]
            _arrow(ax, (8.4, row_y(n, N)), (9.85, row_y(t, T)), color=expert_color(e), lw=1.1, alpha=0.75)
        first += c
    for t in range(T):
        y = row_y(t, T)
        _box(ax, 9.85, y - rh / 2, 1.9, rh, f"out[{t}]" + (f" = Σ of {k}" if k > 1 else ""), "0.35", fill=0.06,
             gid=f"out:{t}", fs=9, family=MONO)

    idle = [e for e, c in enumerate(counts_E) if not c]
    notes = [f"expert ids in {'token' if k == 1 else '(token, slot)'} order: {flat.tolist()}",
             f"order = argsort(ids, stable) = {slot_N}     tokens per expert = {counts_E}",
             (f"expert{'s' if len(idle) > 1 else ''} {', '.join(map(str, idle))}: no token, no matmul.   " if idle
              else "") + "The score scales the expert's input: y = expert_e(σ · x).  Then the shared expert's "
                         "output is added to every token."]
    for i, text in enumerate(notes):
        _label(ax, 0.2, 1.2 - 0.36 * i, text, ha="left", fs=9, family=MONO if i < 2 else None)
    return fig


# --------------------------------------------------------------------------------------------------- 4. shared + routed
def shared_routed_moe(cfg: Llama4Config, title: str | None = None) -> VizFigure:
    """The Llama 4 MoE block: out(x) = shared(x) + Σ_{e ∈ top-k(x)} expert_e(σ_e(x) · x), with σ the sigmoid of the
    chosen router logits. Sizes from cfg; raises if cfg has no MoE layer."""
    _check_config(cfg)
    if not cfg.moe_layers:
        raise ValueError("cfg has no MoE layer (moe_layers is empty): there is no shared + routed block to draw")
    D, F, E, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts, cfg.num_experts_per_tok
    fig, ax = _canvas(12.0, 5.6, title or f"shared + routed MoE: {E} experts, top-{k}, D = {D}, F = {F}")
    yt, ym, yb = 4.1, 2.6, 1.55  # the shared lane, the router lane, the bypass carrying x to the experts
    _box(ax, 0.2, ym - 0.35, 1.3, 0.7, f"x  (a token)\n[D = {D}]", "0.35", fill=0.06, gid="x")
    _arrow(ax, (1.5, ym), (1.95, ym), head=False)
    ax.add_patch(Circle((1.95, ym), 0.05, color="0.15", zorder=3))
    _arrow(ax, (1.95, ym), (1.95, yt), (4.4, yt))
    _box(ax, 4.4, yt - 0.4, 3.5, 0.8, f"shared expert: {_ffn_text(cfg)}\nevery token, weight 1", SHARED_COLOR,
         gid="shared")
    _arrow(ax, (1.95, ym), (2.35, ym))
    _box(ax, 2.35, ym - 0.4, 1.95, 0.8, f"router  W_r [{E}, {D}]\nlogits = x W_rᵀ  [{E}]", ROUTER_COLOR,
         gid="router", fs=9)
    _arrow(ax, (4.3, ym), (4.65, ym))
    _box(ax, 4.65, ym - 0.4, 2.05, 0.8, f"top-{k} logits → expert e\nscore σ = sigmoid(logit_e)", ROUTER_COLOR,
         gid="topk", fs=9)
    xo = 7.25
    _arrow(ax, (6.7, ym), (xo - 0.17, ym), color=ROUTER_COLOR)
    _label(ax, 6.93, ym + 0.2, "σ", color=ROUTER_COLOR, fs=11)
    _arrow(ax, (1.95, ym), (1.95, yb), (xo, yb), (xo, ym - 0.17))
    _label(ax, 4.6, yb - 0.22, "x itself: the expert's input", fs=9, color="0.3")
    _op(ax, xo, ym, "×")
    _arrow(ax, (xo + 0.17, ym), (7.9, ym))
    for j in (2, 1):  # the other experts, behind the chosen one
        _box(ax, 7.9 + 0.1 * j, ym - 0.45 + 0.1 * j, 2.2, 0.9, "", expert_color(j), fill=0.25)
    _box(ax, 7.9, ym - 0.45, 2.2, 0.9, f"routed expert e\n(top-{k} of {E})\n{_ffn_text(cfg)}", expert_color(0),
         fill=0.3, gid="routed", fs=9)
    _label(ax, 9.0, ym - 0.95, "σ scales the INPUT:\nexpert_e(σ · x), not σ · expert_e(x)", fs=9,
           color="#a03020")
    xp = 10.6
    _arrow(ax, (10.1, ym), (xp, ym), (xp, yt - 0.17))
    if k > 1:
        _label(ax, xp + 0.1, (ym + yt) / 2, f"Σ over the\n{k} chosen", ha="left", fs=9)
    _arrow(ax, (7.9, yt), (xp - 0.17, yt))
    _op(ax, xp, yt, "+")
    _arrow(ax, (xp + 0.17, yt), (11.0, yt))
    _box(ax, 11.0, yt - 0.35, 0.85, 0.7, "out\n[D]", "0.35", fill=0.06, gid="out")
    _label(ax, 6.0, 0.75, "out(x) = shared(x) + Σ_{e ∈ top-k(x)} expert_e(σ_e(x) · x)", fs=10.5, family=MONO)
    swiglu = 3 * D * F
    _label(ax, 6.0, 0.3, f"σ is a sigmoid: no softmax over experts, no renormalisation.   Per token: the shared "
                         f"expert + {k} of {E} routed = {_si((1 + k) * swiglu)} of {_si((1 + E) * swiglu)} "
                         f"expert weights in this layer.", fs=9)
    return fig


# --------------------------------------------------------------------------------------------------- 5. attention
def _stride(seq_len: int, max_cells: int, chunk: int | None) -> int:
    """Positions per drawn cell: 1 when seq_len fits, else the smallest divisor of the chunk size (so chunk edges
    fall on cell edges) that keeps at most max_cells cells; without a usable divisor, ⌈seq_len / max_cells⌉."""
    need = math.ceil(seq_len / max_cells)
    if need <= 1:
        return 1
    if chunk is not None:
        for s in range(need, chunk + 1):
            if chunk % s == 0:
                return s
    return need


def _kept_positions(cfg: Llama4Config, layer: int, p: int) -> tuple[int, int]:
    """[start, end) of the positions layer still holds in its KV cache after positions 0 … p, from the cache itself
    (a one-layer `LayerKV` with 1-wide heads, filled with p + 1 positions)."""
    C = cfg.attention_chunk_size if cfg.is_chunked(layer) else None
    kv = LayerKV(1, 1, min(C, p + 1) if C else p + 1, 1, C, torch.float32, "cpu")
    z = torch.zeros(1, 1, p + 1, 1)
    kv.update(z, z, torch.arange(p + 1), p0=0)
    return kv.start, kv.start + kv.length


def attention_patterns(cfg: Llama4Config, seq_len: int, decode_pos: int | None = None, max_cells: int = 96,
                       title: str | None = None) -> VizFigure:
    """Top: the masks of a RoPE layer (chunked: causal within blocks of C) and a NoPE layer (global causal) over
    positions 0 … seq_len-1, from `attention.attention_mask` (at most max_cells cells a side: past that, one cell per
    group of positions). Bottom: at decode position decode_pos (default seq_len - 1), which positions each kind of
    layer still keeps in its KV cache (from `cache.LayerKV`), and what the whole cache costs."""
    _check_config(cfg)
    seq_len = _check_int(seq_len, "seq_len", 2)
    p = seq_len - 1 if decode_pos is None else _check_int(decode_pos, "decode_pos", 0, seq_len - 1)
    max_cells = _check_int(max_cells, "max_cells", 8)
    L, C = cfg.num_hidden_layers, cfg.attention_chunk_size
    rope_layers = [i for i in range(L) if cfg.uses_rope(i)]
    nope_layers = [i for i in range(L) if not cfg.uses_rope(i)]
    kinds = []  # (name, first layer of that kind, how many, colour, chunk size of its mask)
    if rope_layers:
        chunk = C if cfg.is_chunked(rope_layers[0]) else None
        kinds.append((f"RoPE, chunked (C = {C})" if chunk else "RoPE, global", rope_layers, ROPE_COLOR, chunk))
    if nope_layers:
        kinds.append(("NoPE, global", nope_layers, NOPE_COLOR, None))
    s = _stride(seq_len, max_cells, C)
    pos = torch.arange(0, seq_len, s)
    n = len(pos)

    fig = VizFigure(figsize=(11.0, 8.0), layout="constrained")
    gs = fig.add_gridspec(2, 2, height_ratios=[3.3, 1.5])
    cmap = ListedColormap([MASK_MASKED, MASK_ATTENDS])
    for j, (name, layers, color, chunk) in enumerate(kinds):
        ax = fig.add_subplot(gs[0, j])
        m = attention_mask(pos, pos, chunk).numpy()
        ax.imshow(m, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", extent=(0, n * s, n * s, 0),
                  gid=f"mask:{name.split(',')[0]}")
        if n <= 40 and s == 1:
            ax.set_xticks(np.arange(n + 1), minor=True)
            ax.set_yticks(np.arange(n + 1), minor=True)
            ax.grid(which="minor", color="white", lw=0.5)
            ax.tick_params(which="minor", length=0)
        if chunk is not None:
            for b in range(chunk, n * s, chunk):
                ax.axvline(b, **CHUNK_LINE)
                ax.axhline(b, **CHUNK_LINE)
        ax.set_title(f"{name.split(',')[0]} layers ({len(layers)} of {L}, e.g. layer {layers[0]})\n"
                     f"{name.split(', ')[1]} causal mask", color=color, fontsize=11)
        ax.set_xlabel("key position s" + (f" (a cell = {s} positions)" if s > 1 else ""))
        ax.set_ylabel("query position p")
    handles = [Patch(fc=MASK_ATTENDS, label="attends"), Patch(fc=MASK_MASKED, ec="0.7", label="masked"),
               Line2D([], [], **CHUNK_LINE, label="chunk boundary")]

    ax = fig.add_subplot(gs[1, :])
    for j, (name, layers, color, chunk) in enumerate(reversed(kinds)):
        a, b = _kept_positions(cfg, layers[0], p)
        y = 1.4 * j
        ax.barh(y, b - a, left=a, height=0.55, color=color, gid=f"kept:{name.split(',')[0]}")
        if a:
            ax.barh(y, a, left=0, height=0.55, color=DROP_COLOR, hatch="//", ec="white", lw=0)
        ax.barh(y, seq_len - p - 1, left=p + 1, height=0.55, color="none", ec="0.75", lw=0.8, ls="--")
        note = (f"{name.split(',')[0]} layer: keeps positions {a} … {b - 1} ({b - a}, at most C = {C}); "
                "earlier chunks are never seen again" if chunk
                else f"{name.split(',')[0]} layer: keeps all {b - a} positions; grows with the context")
        ax.text(0, y + 0.36, note, va="bottom", fontsize=9.5, color=color)
    ax.set_yticks([])
    ax.axvline(p + 0.5, color="black", lw=1.2, ls=":")
    if C is not None:
        for b in range(C, seq_len, C):
            ax.axvline(b, **CHUNK_LINE)
    ax.set_xlim(0, seq_len)
    ax.set_ylim(-0.45, 1.4 * len(kinds) - 0.35)
    naive, aware = (kv_cache_bytes(cfg, p + 1, chunk_aware=a) for a in (False, True))
    ax.set_title(f"KV cache at decode position p = {p} (dotted line): the positions each kind of layer keeps\n"
                 f"whole model, batch 1, bf16, {p + 1} tokens: {_bytes(aware)} chunk-aware vs {_bytes(naive)} if "
                 "every layer kept every token", fontsize=10.5)
    ax.set_xlabel("position")
    handles += [Patch(fc=DROP_COLOR, hatch="//", ec="white", label="dropped from the cache"),
                Patch(fc="none", ec="0.75", ls="--", label="not generated yet")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12.5, weight="bold")
    return fig


# --------------------------------------------------------------------------------------------------- 6. vision
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def _tile_color(i: int):
    return colormaps["Pastel1"].colors[i % 9]


def _patch_grid(ax, x, y, side, n, color, gid=None):
    """A square of side `side` cut into n × n cells (lines drawn only when they stay visible)."""
    _box(ax, x, y, side, side, "", color, fill=1.0, round_=False, gid=gid)
    if n <= 48:
        for i in range(1, n):
            ax.plot([x + i * side / n] * 2, [y, y + side], color="white", lw=0.5)
            ax.plot([x, x + side], [y + i * side / n] * 2, color="white", lw=0.5)


def _token_lines(prompt: str) -> list[list[tuple[str, int]]]:
    """An image's special tokens as lines (one per row of tiles, then the global tile), runs of <|patch|> collapsed:
    [(token, run length), ...]."""
    lines, line = [], []
    for tok in _SPECIAL.findall(prompt):
        if line and tok == line[-1][0] == "<|patch|>":
            line[-1] = (tok, line[-1][1] + 1)
        else:
            line.append((tok, 1))
        if tok == "<|tile_y_separator|>":
            lines.append(line)
            line = []
    return lines + [line]


def vision_pipeline(vision_cfg: VisionConfig, text_cfg: Llama4Config, grid: tuple[int, int] = (2, 2),
                    title: str | None = None) -> VizFigure:
    """The image path of early fusion: an image on a grid = (rows, cols) of tiles (+ a global tile) → each tile's
    patches → the ViT (2-D RoPE) → pixel shuffle → adapter MLP → projector to the text width → the `<|patch|>`
    slots of the prompt (`image.image_prompt`), one feature per slot. Sizes from the two configs."""
    if not isinstance(vision_cfg, VisionConfig):
        raise TypeError(f"vision_cfg must be a VisionConfig, got {type(vision_cfg).__name__}")
    _check_config(text_cfg, "text_cfg")
    v = vision_cfg
    tpt = v.tokens_per_tile
    prompt = image_prompt(tuple(grid), tpt)  # validates the grid
    rows, cols = grid
    n_tiles = rows * cols + (rows * cols > 1)
    lines = _token_lines(prompt)
    n_tokens = len(_SPECIAL.findall(prompt))
    S, p, G, W, inv = v.image_size, v.patch_size, v.grid_size, v.hidden_size, round(1 / v.pixel_shuffle_ratio)
    hs = 0.34 * len(lines)  # height of the prompt's token lines
    height = 6.5 + hs
    fig, ax = _canvas(12.0, height, title or f"from pixels to <|patch|> tokens: {n_tiles} tile"
                                              f"{'s' if n_tiles > 1 else ''} × {tpt} tokens")
    y1 = height - 2.45  # bottom of the first row

    # row 1: image → tiles → patches → ViT
    _box(ax, 0.2, y1 + 0.35, 1.5, 1.1, "image\n(any size)", "0.45", fill=0.12, gid="image")
    _arrow(ax, (1.75, y1 + 0.9), (2.2, y1 + 0.9))
    a = min(1.5 / cols, 1.5 / rows)
    for r in range(rows):
        for c in range(cols):
            _box(ax, 2.3 + c * a, y1 + 0.15 + (rows - 1 - r) * a + (1.5 - rows * a) / 2, a - 0.04, a - 0.04, "",
                 "0.5", round_=False, gid=f"tile:{r * cols + c}", face=_tile_color(r * cols + c))
    x = 2.3 + cols * a
    if n_tiles > 1:
        _label(ax, x + 0.13, y1 + 0.9, "+", fs=13)
        _box(ax, x + 0.3, y1 + 0.55, 0.7, 0.7, "", "0.5", round_=False, gid=f"tile:{n_tiles - 1}", dashed=True,
             face=_tile_color(n_tiles - 1))
        _label(ax, x + 0.65, y1 + 0.4, "global", fs=8)
        x += 1.0
    _label(ax, 3.3, y1 - 0.2, f"{rows}×{cols} tiles of {S}×{S} px" + ("\n+ the whole image as one tile"
                                                                       if n_tiles > 1 else ""), fs=9, va="top")
    _arrow(ax, (x + 0.1, y1 + 0.9), (5.3, y1 + 0.9))
    _patch_grid(ax, 5.35, y1 + 0.15, 1.5, G, _tile_color(0), gid="patches")
    _box(ax, 5.35, y1 + 1.65 - 1.5 / G, 1.5 / G, 1.5 / G, "", "black", fill=0.8, round_=False)
    _label(ax, 6.1, y1 - 0.2, f"one tile: {G}×{G} = {G * G} patches of {p}×{p} px\n"
                              f"each {v.num_channels}·{p}·{p} = {v.num_channels * p * p} values → linear → {W}",
           fs=9, va="top")
    _arrow(ax, (6.95, y1 + 0.9), (7.45, y1 + 0.9))
    _box(ax, 7.45, y1, 4.35, 1.8,
         f"ViT encoder, each tile on its own:\n{v.num_hidden_layers} layers, width {W}, {v.num_attention_heads} heads"
         f" + a class token and\nlearned position embeddings; 2-D RoPE: half the pairs\nturn with the column x, half "
         f"with the row y; every patch\nsees every patch → drop the class token: {G * G} × {W}", "#4c72b0",
         gid="vit", fs=9)

    # row 2: pixel shuffle → adapter → projector → features
    y2 = 0.95 + hs  # bottom of the second row
    _arrow(ax, (9.6, y1), (9.6, y2 + 1.95), (0.85, y2 + 1.95), (0.85, y2 + 1.72))
    g, c = 2 * inv, 1.1 / (2 * inv)  # the illustration: a (2·inv)² patch grid → 2 × 2 tokens
    shades = colormaps["tab10"].colors
    for i in range(g):
        for j in range(g):
            block = (i // inv) * 2 + j // inv
            _box(ax, 0.3 + j * c, y2 + 0.6 + (g - 1 - i) * c, c - 0.02, c - 0.02, "", shades[block],
                 fill=0.35 + 0.5 * ((i % inv) * inv + j % inv) / (inv * inv), round_=False)
    _arrow(ax, (1.5, y2 + 1.15), (1.95, y2 + 1.15))
    for b in range(4):  # each output token: its block's inv² patches side by side along the width
        bx, by = 2.05 + (b % 2) * 0.75, y2 + 1.2 - (b // 2) * 0.45
        for q in range(inv * inv):
            _box(ax, bx + q * 0.65 / (inv * inv), by, 0.65 / (inv * inv) - 0.01, 0.35, "", shades[b],
                 fill=0.35 + 0.5 * q / (inv * inv), round_=False)
    I = v.intermediate_size
    _label(ax, 1.85, y2 + 0.2, f"pixel shuffle (r = {v.pixel_shuffle_ratio:g}): each {inv}×{inv} block → one token\n"
                               f"{G * G} × {W} → {tpt} × {I}", fs=9)
    _arrow(ax, (3.65, y2 + 1.15), (4.1, y2 + 1.15))
    _box(ax, 4.1, y2 + 0.7, 2.2, 0.9, f"adapter MLP\n{I} → {v.projector_input_dim} → {v.projector_output_dim}\n"
                                      "GELU after each layer", "#55a868", gid="adapter", fs=9)
    _arrow(ax, (6.3, y2 + 1.15), (6.75, y2 + 1.15))
    D = text_cfg.hidden_size
    _box(ax, 6.75, y2 + 0.7, 2.0, 0.9, f"projector\nlinear {v.vision_output_dim} → {D}\n(the text width)",
         "#c44e52", gid="projector", fs=9)
    _arrow(ax, (8.75, y2 + 1.15), (9.2, y2 + 1.15))
    _box(ax, 9.2, y2 + 0.7, 2.6, 0.9, f"image features [{n_tiles * tpt}, {D}]\n{tpt} per tile × {n_tiles} tile"
                                      f"{'s' if n_tiles > 1 else ''}", "0.35", fill=0.08, gid="features", fs=9)
    _arrow(ax, (10.5, y2 + 0.7), (10.5, hs + 0.55))

    # row 3: the prompt, with one <|patch|> slot per feature, coloured by the tile it receives
    _box(ax, 0.1, 0.12, 11.8, hs + 0.43, "", "0.6", fill=0.03)
    _label(ax, 0.2, hs + 0.37, f"the prompt: one image = {n_tokens} tokens; each <|patch|> embedding is replaced by "
                               "the next image feature, tile by tile", ha="left", fs=9)
    tile, cw = 0, 0.058  # a monospace character at 7 pt, in inches
    for li, line in enumerate(lines):
        x, y = 0.2, 0.25 + 0.34 * (len(lines) - 1 - li)
        for tok, run in line:
            text = f"{tok}×{run}" if run > 1 else tok
            w = len(text) * cw + 0.12
            patch = tok == "<|patch|>"
            _box(ax, x, y, w, 0.26, text, "0.3", round_=False, fs=7, family=MONO,
                 gid=f"slots:{tile}" if patch else None, face=_tile_color(tile) if patch else "white")
            tile += patch
            x += w + 0.05
    return fig


# --------------------------------------------------------------------------------------------------- 7. distillation
TEACHER_COLOR, STUDENT_COLOR = "#8c564b", "#1f77b4"


def _model_summary(cfg: Llama4Config) -> str:
    ffn = (f"{cfg.num_local_experts} experts (top-{cfg.num_experts_per_tok}), F = {cfg.intermediate_size}"
           if cfg.moe_layers else f"dense, F = {cfg.intermediate_size_mlp}")
    return (f"{_si(cfg.num_parameters())} parameters, {_si(cfg.num_parameters(active=True))} active\n"
            f"{cfg.num_hidden_layers} layers, D = {cfg.hidden_size}\n{ffn}")


def distillation(teacher_cfg: Llama4Config, student_cfg: Llama4Config, kd: DistillConfig | None = None,
                 steps: int | None = None, title: str | None = None) -> VizFigure:
    """Teacher → student distillation: per position, the loss mixes the teacher's whole distribution at temperature T
    (soft targets, KL scaled by T²) with the true next token (hard target, cross-entropy):
        L(t) = α(t) · T² · KL(softmax(v/T) ‖ softmax(z/T)) + (1 − α(t)) · CE(softmax(z), y),
    with α(t) from `train.distill.alpha_at` over `steps` (default: the course's student run). kd: the DistillConfig
    (default DistillConfig()). The soft-target bars are an illustration (made-up logits) at the config's T."""
    _check_config(teacher_cfg, "teacher_cfg")
    _check_config(student_cfg, "student_cfg")
    kd = DistillConfig() if kd is None else kd
    if not isinstance(kd, DistillConfig):
        raise TypeError(f"kd must be a DistillConfig, got {type(kd).__name__}")
    steps = student_train_config().steps if steps is None else _check_int(steps, "steps", 2)
    if teacher_cfg.vocab_size != student_cfg.vocab_size:
        raise ValueError(f"teacher and student must share a vocabulary, got {teacher_cfg.vocab_size} and "
                         f"{student_cfg.vocab_size} tokens")
    T = kd.temperature
    fig, ax = _canvas(12.0, 5.8, title or f"distillation: teacher → student, T = {T:g}, α by the {kd.schedule} "
                                          "schedule")
    _box(ax, 0.2, 2.55, 1.4, 0.8, "batch:\ntokens x,\nnext tokens y", "0.35", fill=0.06, gid="batch", fs=9)
    _arrow(ax, (1.6, 2.95), (1.85, 2.95), (1.85, 4.05), (2.1, 4.05))
    _arrow(ax, (1.85, 2.95), (1.85, 1.65), (2.1, 1.65))
    _box(ax, 2.1, 3.45, 2.4, 1.2, "teacher (frozen)\n" + _model_summary(teacher_cfg), TEACHER_COLOR, gid="teacher",
         fs=8.5)
    _box(ax, 2.1, 1.05, 2.4, 1.2, "student (trained)\n" + _model_summary(student_cfg), STUDENT_COLOR,
         gid="student", fs=8.5)
    # the soft targets: a made-up teacher distribution at temperature T
    logits = torch.tensor([2.4, 1.5, 0.9, 0.2, -0.4, -1.0])
    bars = fig.add_axes((4.8 / 12, 3.5 / 5.8, 1.0 / 12, 0.9 / 5.8))
    bars.bar(range(6), torch.softmax(logits / T, -1).numpy(), color=TEACHER_COLOR, width=0.7)
    bars.set_ylim(0, 1)
    bars.set_xticks([])
    bars.set_yticks([])
    bars.set_title(f"soft targets (example)\nsoftmax(v / {T:g})", fontsize=8.5, color=TEACHER_COLOR)
    _arrow(ax, (4.5, 4.05), (4.75, 4.05), color=TEACHER_COLOR)
    _arrow(ax, (5.85, 3.95), (6.4, 3.95), color=TEACHER_COLOR)
    _box(ax, 6.4, 3.55, 1.9, 0.8, f"soft: T² · KL(p_T ‖ q_T)\nq_T = softmax(z / {T:g})", TEACHER_COLOR, gid="kl",
         fs=9)
    _arrow(ax, (4.5, 1.8), (6.15, 1.8), (6.15, 3.7), (6.4, 3.7), color=STUDENT_COLOR)
    _label(ax, 6.05, 2.75, "logits z", fs=9, color=STUDENT_COLOR, ha="right")
    _arrow(ax, (4.5, 1.5), (6.4, 1.5), color=STUDENT_COLOR)
    _box(ax, 6.4, 1.1, 1.9, 0.8, "hard: CE(softmax(z), y)\nthe one true token", "0.35", gid="ce", fs=9)
    xp = 7.35
    _arrow(ax, (xp, 3.55), (xp, 2.97))
    _arrow(ax, (xp, 1.9), (xp, 2.63))
    _label(ax, xp + 0.1, 3.27, "× α(t)", ha="left", fs=9)
    _label(ax, xp + 0.1, 2.25, "× (1 − α(t))", ha="left", fs=9)
    _op(ax, xp, 2.8, "+")
    _label(ax, xp + 0.25, 2.8, "L: its gradient\nreaches the\nstudent only", ha="left", fs=8.5, color=STUDENT_COLOR)
    _label(ax, 4.2, 0.45, "L(t) = α(t)·T²·KL(softmax(v/T) ‖ softmax(z/T)) + (1 − α(t))·CE(softmax(z), y)",
           fs=9.5, family=MONO)
    # the schedule
    t = np.arange(steps)
    alpha = np.array([alpha_at(int(s), steps, kd) for s in t])
    sched = fig.add_axes((9.0 / 12, 1.2 / 5.8, 2.8 / 12, 3.3 / 5.8))
    sched.plot(t, alpha, color=TEACHER_COLOR, lw=2, gid="alpha")
    sched.fill_between(t, alpha, color=TEACHER_COLOR, alpha=0.15, label="soft (α)")
    sched.fill_between(t, alpha, 1, color="0.5", alpha=0.12, label="hard (1 − α)")
    sched.set_ylim(0, 1)
    sched.set_xlim(0, steps - 1)
    sched.set_xlabel("training step", fontsize=9)
    sched.set_ylabel("weight", fontsize=9)
    sched.set_title(f"α(t), the weight of the soft targets:\n{kd.schedule} schedule over {steps} steps", fontsize=9.5)
    sched.tick_params(labelsize=8)
    sched.legend(fontsize=8, loc="lower center", frameon=False)
    return fig


# --------------------------------------------------------------------------------------------------- 8. post-training
SFT_COLOR, RL_COLOR, DPO_COLOR = "#4c72b0", "#dd8452", "#8172b3"


def posttrain_pipeline(sft: SFTConfig | None = None, rl: RLConfig | None = None, dpo: DPOConfig | None = None,
                       title: str | None = None) -> VizFigure:
    """Llama 4's post-training order with the numbers of the given stage configs (default: the course's pipeline
    under the current profile, `train.posttrain.recipe()`): a judge prunes the easy SFT examples → SFT → online RL
    (groups of samples, verifiable rewards, groups with all-equal rewards dropped, harder prompts over time) → DPO.
    The reward dots of the RL panel are an illustration of the four kinds of group."""
    if sft is None or rl is None or dpo is None:
        r = posttrain_recipe()
        sft, rl, dpo = sft or r.sft, rl or r.rl, dpo or r.dpo
    for name, c, cls in (("sft", sft, SFTConfig), ("rl", rl, RLConfig), ("dpo", dpo, DPOConfig)):
        if not isinstance(c, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, got {type(c).__name__}")
    if not 0 < sft.keep_fraction <= 1:
        raise ValueError(f"sft.keep_fraction must be in (0, 1], got {sft.keep_fraction}")
    fig, ax = _canvas(12.0, 4.9, title or "post-training: prune the SFT data → SFT → online RL → DPO")
    yb, yt = 3.5, 2.9  # stage boxes' bottom; top of the details below them
    stages = ((0.2, 1.3, "pretrained\nbase model", "0.35", "base"),
              (1.85, 2.3, "1. a judge prunes\nthe SFT data", DROP_COLOR, "prune"),
              (4.5, 1.85, "2. SFT\n(lightweight)", SFT_COLOR, "sft"),
              (6.7, 2.95, "3. online RL\n(the main stage)", RL_COLOR, "rl"),
              (10.0, 1.85, "4. DPO\n(lightweight)", DPO_COLOR, "dpo"))
    for i, (x, w, text, color, gid) in enumerate(stages):
        _box(ax, x, yb, w, 0.8, text, color, fill=0.25, gid=gid, weight="bold")
        if i:
            px = stages[i - 1][0] + stages[i - 1][1]
            _arrow(ax, (px, yb + 0.4), (x, yb + 0.4))

    # 1. pruning: the pool, its easy part dropped
    pool, keep = sft.pool_size, round(sft.pool_size * sft.keep_fraction)
    kw = 2.3 * sft.keep_fraction
    _box(ax, 1.85, yt - 0.55, kw, 0.55, f"kept {keep}\n(hardest)", SFT_COLOR, fill=0.35, round_=False, gid="kept",
         fs=8.5)
    if keep < pool:
        _box(ax, 1.85 + kw, yt - 0.55, 2.3 - kw, 0.55, f"dropped\n{pool - keep}", DROP_COLOR, fill=0.5,
             round_=False, gid="dropped", fs=8.5)
    judge = (f"the model itself judges,\nafter {sft.judge_at} SFT steps on all" if sft.judge_at
             else "an external judge,\nbefore SFT starts")
    _label(ax, 3.0, yt - 0.75, f"a pool of {pool} examples;\n{judge}:\neasy = low NLL of the answer\n"
                               f"→ keep the hardest {sft.keep_fraction:.0%}", fs=9, va="top")
    # 2. SFT
    _label(ax, 5.42, yt, f"{sft.steps} steps × {sft.batch_size}\nexamples, lr {sft.lr:g}\n\ncross-entropy on\nthe "
                         "assistant's\ntokens only", fs=9, va="top")
    # 3. RL: four groups of sampled replies, coloured by reward
    G = min(rl.group_size, 8)
    _label(ax, 6.75, yt + 0.17, f"example groups of {rl.group_size} replies{' (8 shown)' if rl.group_size > 8 else ''}: "
                                  "green right, red wrong", ha="left", fs=8,
           color="0.3")
    groups = ((([1, 0] * G)[:G], "mixed: kept", True), ([1] * G, "all right: a = 0, dropped", False),
              ([0] * G, "all wrong: a = 0, dropped", False), ((([0, 0, 1] * G)[:G]), "mixed: kept", True))
    for gi, (rewards, note, kept) in enumerate(groups):
        y = yt - 0.1 - 0.27 * gi
        for j, r in enumerate(rewards):
            ax.add_patch(Circle((6.85 + j * 0.17, y), 0.065, color="#2ca02c" if r else "#d62728",
                                alpha=1.0 if kept else 0.3, gid=f"reward:{gi}:{j}"))
        if not kept:
            ax.plot([6.72, 6.98 + (G - 1) * 0.17], [y, y], color="0.3", lw=1)
        _label(ax, 7.05 + (G - 1) * 0.17, y, note, ha="left", fs=8, color="0.15" if kept else "0.45")
    refill = f"; refill: up to {rl.max_rounds} rounds" if rl.max_rounds > 1 else ""
    lv = lambda w: " / ".join(f"{x:g}" for x in w)  # noqa: E731
    _label(ax, 8.17, yt - 1.2, f"{rl.steps} steps × {rl.prompts_per_step} prompts × {rl.group_size} samples\n"
                               f"reward 1 when a program checks the answer\n"
                               f"a = (r − mean) / std within each group{refill}\n"
                               f"clipped loss (ε = {rl.clip_eps:g}) + {rl.kl_coef:g} · KL to the SFT model\n"
                               f"levels 1 / 2 / 3 weighted {lv(rl.start_weights)} → {lv(rl.end_weights)}",
           fs=8.5, va="top")
    # 4. DPO
    _label(ax, 10.92, yt, f"{dpo.steps} steps × {dpo.pairs_per_step} pairs\n{dpo.samples_per_prompt} samples a "
                          "prompt:\nchosen = right, formatted\nrejected = the next best\n\n"
                          f"−log σ(β · margin), β = {dpo.beta:g}\n+ {dpo.nll_coef:g} · NLL(chosen)", fs=8.5, va="top")
    _label(ax, 6.0, 0.25, "RL learns only from groups whose rewards differ: the same prompt answered both right and "
                          "wrong.", fs=9, color="0.3")
    return fig


# --------------------------------------------------------------------------------------------------- 9. int4
def int4_layout(weights=None, group_size: int = 8, title: str | None = None) -> VizFigure:
    """How `quant.quantize_int4` and `quant.pack_int4` store one row of weights: cut into groups of group_size, one
    scale s = max|w| / 8 per group, q = clamp(round(w / s), -8, 7), stored as q + 8 (4 bits), two per byte with the
    EVEN element in the LOW nibble. weights: a 1-D row of 2 … 24 values (e.g. the first inputs of an expert's weight
    row; default: a seeded random row)."""
    if weights is None:
        weights = torch.randn(16, generator=torch.Generator().manual_seed(0)) * 0.05
    w = torch.as_tensor(_float(weights, "weights", (1,)), dtype=torch.float32)
    K = w.numel()
    group_size = _check_int(group_size, "group_size", 2)
    if not 2 <= K <= 24 or K % group_size or group_size % 2:
        raise ValueError(f"weights must have 2 … 24 values, a multiple of an even group_size; got {K} values and "
                         f"group_size={group_size}")
    q_K, s_G = (t[0] for t in quantize_int4(w[None], group_size))
    packed = pack_int4(q_K[None])[0].tolist()
    q, s = q_K.tolist(), s_G.tolist()
    cw = min(0.66, 10.3 / K)  # one column per weight
    x0 = 1.55
    fig, ax = _canvas(12.0, 6.3, title or f"int4 layout: {K} weights, groups of {group_size}, two values per byte")
    fs = 8.5 if cw >= 0.5 else 7
    rows = {"w": 5.0, "q": 3.65, "u": 2.85, "byte": 1.55}
    _label(ax, x0 - 0.15, rows["w"] + 0.2, "weights w", ha="right")
    _label(ax, x0 - 0.15, rows["q"] + 0.2, "q = round(w / s)\nclamped to [−8, 7]", ha="right", fs=8.5)
    _label(ax, x0 - 0.15, rows["u"] + 0.25, "q + 8\n(4 bits)", ha="right", fs=8.5)
    _label(ax, x0 - 0.15, rows["byte"] + 0.35, "bytes\n(high | low)", ha="right", fs=8.5)
    for i in range(K):
        x, gcol = x0 + i * cw, ("#4c72b0", "#dd8452")[(i // group_size) % 2]
        _box(ax, x + 0.02, rows["w"], cw - 0.04, 0.4, f"{w[i]:+.3f}".replace("+0.", "+.").replace("-0.", "−."),
             gcol, fill=0.2, gid=f"w:{i}", fs=fs, round_=False)
        _label(ax, x + cw / 2, rows["w"] + 0.55, str(i), fs=7, color="0.4")
        _arrow(ax, (x + cw / 2, rows["w"]), (x + cw / 2, rows["q"] + 0.4), color="0.6", lw=0.8)
        _box(ax, x + 0.02, rows["q"], cw - 0.04, 0.4, str(q[i]), gcol, fill=0.2, gid=f"q:{i}", fs=fs, round_=False)
        _box(ax, x + 0.02, rows["u"], cw - 0.04, 0.5, f"{q[i] + 8}\n{q[i] + 8:04b}", gcol, fill=0.08, gid=f"u:{i}",
             fs=fs - 0.5, round_=False, family=MONO)
    for j in range(K // group_size):  # the groups and their scales
        xa, xb = x0 + j * group_size * cw + 0.05, x0 + (j + 1) * group_size * cw - 0.05
        y = rows["w"] - 0.12
        ax.plot([xa, xa, xb, xb], [y + 0.06, y, y, y + 0.06], color="0.3", lw=1)
        _label(ax, (xa + xb) / 2, y - 0.3, f"group {j}: scale s = max|w| / 8 = {s[j]:.4g}", fs=8.5, gid=f"scale:{j}",
               bbox=dict(fc="white", ec="none", pad=1))
    for b in range(K // 2):  # byte b: element 2b+1 in the high nibble (left), element 2b in the low nibble (right)
        x = x0 + 2 * b * cw
        _box(ax, x + 0.03, rows["byte"], 2 * cw - 0.06, 0.7, "", "0.2", fill=0.0, round_=False, gid=f"byte:{b}")
        for half, elem in ((0, 2 * b + 1), (1, 2 * b)):
            _box(ax, x + 0.06 + half * (cw - 0.03), rows["byte"] + 0.25, cw - 0.06, 0.4, f"{q[elem] + 8:04b}",
                 ("#4c72b0", "#dd8452")[(elem // group_size) % 2], fill=0.2, round_=False, fs=fs - 0.5, family=MONO,
                 gid=f"nibble:{b}:{'low' if half else 'high'}")
            _arrow(ax, (x0 + (elem + 0.5) * cw, rows["u"]), (x + 0.06 + (half + 0.5) * (cw - 0.03),
                                                             rows["byte"] + 0.65), color="0.45", lw=0.9)
        _label(ax, x + cw, rows["byte"] + 0.12, f"0x{packed[b]:02X}", fs=fs - 0.5, family=MONO, gid=f"hex:{b}")
    bits = 4 + 32 / 128
    _label(ax, 0.2, 0.85, f"byte b = (q[2b] + 8) | (q[2b+1] + 8) << 4: the even element is the LOW nibble, so each "
                          "byte shows its odd element first (the arrows cross).", ha="left", fs=9)
    _label(ax, 0.2, 0.45, f"{K} weights → {K // 2} bytes + {K // group_size} float32 scales.   With Llama 4's groups "
                          f"of 128: {bits:g} bits a weight (16 in bfloat16).   Dequantized: ŵ = q · s.", ha="left",
           fs=9)
    return fig


# --------------------------------------------------------------------------------------------------- 10. all-to-all
def all_to_all(num_ranks: int, expert_of_token, experts_per_rank: int, title: str | None = None) -> VizFigure:
    """Expert-parallel MoE across num_ranks processes, experts split in contiguous blocks (rank r owns experts
    r·n … r·n + n − 1, n = experts_per_rank). expert_of_token: per rank, the expert each of its tokens was routed to
    (a list of num_ranks lists, or an [R, T] array). Drawn: 1. the ranks exchange how many tokens each sends each
    other; 2. all-to-all: every token goes to its expert's rank; 3. each rank runs its experts; 4. a second all-to-all
    brings the results back, in the original order. At most 8 ranks, and 12 tokens sent and received per rank."""
    R = _check_int(num_ranks, "num_ranks", 1, 8)
    n = _check_int(experts_per_rank, "experts_per_rank", 1)
    if isinstance(expert_of_token, (torch.Tensor, np.ndarray)):
        expert_of_token = _ints(expert_of_token, "expert_of_token").tolist()
    per_rank = [_ints(list(t), f"expert_of_token[{r}]").reshape(-1) for r, t in enumerate(expert_of_token)]
    if len(per_rank) != R:
        raise ValueError(f"expert_of_token has {len(per_rank)} ranks' tokens for num_ranks={R}")
    E = R * n
    for r, ids in enumerate(per_rank):
        _check_experts(ids, E, f"expert_of_token[{r}]")
        if len(ids) > 12:
            raise ValueError(f"rank {r} has {len(ids)} tokens; draw at most 12 per rank")
    counts = np.zeros((R, R), dtype=np.int64)  # counts[src, dst]: tokens src sends to dst
    for r, ids in enumerate(per_rank):
        np.add.at(counts[r], ids // n, 1)
    lane = 0.75
    top = 0.9 + R * 0.3 + 0.9 + R * lane
    fig, ax = _canvas(12.0, top + 1.1, title or f"expert parallelism: {R} ranks × {n} experts, two all-to-alls")
    for x, text in ((1.9, "tokens on each rank\n(colour = chosen expert)"), (6.9, "2. all-to-all: tokens travel to the "
                    "rank\nthat owns their expert"), (10.6, "3. each rank runs\nits own experts")):
        _label(ax, x, top + 0.4, text, fs=9.5, weight="bold")
    chip = 0.27
    received = [[] for _ in range(R)]  # per destination: (source, token index, expert), in arrival order
    for src in range(R):
        for t, e in enumerate(per_rank[src]):
            received[e // n].append((src, t, int(e)))
    for r, got in enumerate(received):
        if len(got) > 12:
            raise ValueError(f"rank {r} would receive {len(got)} tokens; draw at most 12 per rank (fewer tokens, or "
                             "more even routing)")
    for r in range(R):
        y = top - (r + 0.5) * lane
        _label(ax, 0.2, y, f"rank {r}", ha="left", fs=9, weight="bold")
        _label(ax, 0.2, y - 0.22, f"experts {r * n}…{r * n + n - 1}" if n > 1 else f"expert {r}", ha="left", fs=7.5,
               color="0.35")
        for t, e in enumerate(per_rank[r]):
            _box(ax, 1.05 + t * (chip + 0.03), y - 0.15, chip, 0.3, str(e), expert_color(e), fill=0.55, round_=False,
                 gid=f"token:{r}:{t}", fs=7.5)
        for i, (src, t, e) in enumerate(received[r]):
            x = 5.9 + i * (chip + 0.03) + 0.12 * src  # a small gap between what each source sent
            _box(ax, x, y - 0.15, chip, 0.3, str(e), expert_color(e), fill=0.55, round_=False,
                 gid=f"recv:{r}:{i}:{src}:{t}", fs=7.5)
            _arrow(ax, (1.05 + t * (chip + 0.03) + chip / 2, top - (src + 0.5) * lane), (x + chip / 2, y),
                   color=expert_color(e), lw=0.9, alpha=0.6, head=False, zorder=0.5)
        for j in range(n):
            e = r * n + j
            c = sum(1 for *_, ee in received[r] if ee == e)
            _box(ax, 9.8 + j * 1.7 / n, y - 0.22, 1.7 / n - 0.06, 0.44, f"e{e}: {c}" if n <= 2 else str(c),
                 expert_color(e), fill=0.3, gid=f"expert:{e}", fs=8)
    # the counts, exchanged first
    y_t = top - R * lane - 0.55
    _label(ax, 0.2, y_t, "1. first, every rank tells every other how many tokens it will send (an all-to-all of "
                         "counts):", ha="left", fs=9.5, weight="bold")
    cell = 0.38
    for src in range(R):
        _label(ax, 1.75, y_t - 0.35 - (src + 0.5) * cell, f"from rank {src}", ha="right", fs=8)
        for dst in range(R):
            _box(ax, 1.85 + dst * cell, y_t - 0.35 - (src + 1) * cell, cell - 0.03, cell - 0.03,
                 str(counts[src, dst]), "0.4", fill=min(0.5, 0.05 + 0.1 * counts[src, dst]), round_=False,
                 gid=f"count:{src}:{dst}", fs=8.5)
    for dst in range(R):
        _label(ax, 1.85 + (dst + 0.5) * cell, y_t - 0.2, f"to {dst}", fs=7.5)
    _label(ax, 2.1 + R * cell, y_t - 0.35 - R * cell / 2, "Each rank sizes its receive buffer from its column.",
           ha="left", fs=9)
    _label(ax, 8.45, y_t - 0.35, "4. a second all-to-all (the same counts, transposed)\nsends every result back to its "
                                 "token's rank,\nwhich puts the results back in its tokens' order\n"
                                 "and adds the shared expert's output.", ha="left", va="top", fs=9)
    return fig


# --------------------------------------------------------------------------------------------------- 11. number formats
_FORMATS = (("fp32", torch.float32, "float32"), ("bf16", torch.bfloat16, "bfloat16"),
            ("fp8 e4m3", torch.float8_e4m3fn, "e4m3fn: no ∞"), ("fp8 e5m2", torch.float8_e5m2, "e5m2: has ∞, NaN"))


def _float_bits(value: float, dtype: torch.dtype) -> tuple[str, float]:
    """The bits of value rounded to dtype (sign first) and the value they stand for."""
    x = torch.tensor(value, dtype=torch.float32).to(dtype)
    bits = torch.finfo(dtype).bits
    raw = int(x.view({8: torch.uint8, 16: torch.int16, 32: torch.int32}[bits]).item()) & ((1 << bits) - 1)
    return format(raw, f"0{bits}b"), float(x.float())


def _num(x: float) -> str:
    """448, 57344, 3.403e+38: whole numbers in full while they stay short."""
    return f"{x:.0f}" if abs(x) < 1e6 and x == int(x) else f"{x:.4g}"


def number_formats(value: float = math.pi, title: str | None = None) -> VizFigure:
    """The bit layouts of fp32, bf16, fp8 e4m3, fp8 e5m2 (sign | exponent | mantissa, read off `torch.finfo`) and
    int4, each filled with the bits of `value` rounded to that format, with its range and precision."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > 448:
        raise ValueError(f"value must be a finite number with |value| <= 448 (the fp8 e4m3 maximum), got {value!r}")
    bw, x0, xs = 0.19, 1.75, 8.2  # bit width, first bit, stats column
    fig, ax = _canvas(12.0, 6.5, title or f"number formats: the bits of {value:.6g} in each")
    for i, (name, dtype, note) in enumerate(_FORMATS + (("int4", None, "two's complement"),)):
        y = 5.3 - 0.95 * i
        _label(ax, 0.2, y + 0.18, name, ha="left", fs=10.5, weight="bold")
        _label(ax, 0.2, y - 0.12, note, ha="left", fs=8, color="0.35")
        if dtype is None:  # int4: a signed integer, times a scale per group
            q = max(QMIN, min(QMAX, round(value)))
            bits, fields = format(q & 0xF, "04b"), (("sign", 1, SIGN_COLOR), ("value", 3, MANT_COLOR))
            stats = (f"integers −8 … 7, shared scale per group of 128\n{value:.6g} → {q}; stored as q + 8 = {q + 8} "
                     f"= {q + 8:04b}")
        else:
            fi = torch.finfo(dtype)
            m = round(-math.log2(fi.eps))
            bits, stored = _float_bits(value, dtype)
            fields = (("sign", 1, SIGN_COLOR), ("exponent", fi.bits - 1 - m, EXP_COLOR), ("mantissa", m, MANT_COLOR))
            stats = (f"max {_num(fi.max)}, smallest normal {fi.smallest_normal:.3g}\n"
                     f"ε = {fi.eps:.3g} (~{-math.log10(fi.eps):.1f} digits); {value:.6g} → {stored:.8g}")
        b = 0
        for field, nbits, color in fields:
            for j in range(nbits):
                _box(ax, x0 + (b + j) * bw, y - 0.15, bw - 0.02, 0.42, bits[b + j], color, fill=0.35, round_=False,
                     gid=f"bit:{name}:{field}:{j}", fs=8, family=MONO)
            label = f"{field} {nbits}" if nbits * bw > 0.09 * len(f"{field} {nbits}") else f"{field[0]}{nbits}"
            _label(ax, x0 + (b + nbits / 2) * bw, y - 0.33, label if field != "sign" else "s", fs=7.5, color=color)
            b += nbits
        _label(ax, xs, y + 0.05, stats, ha="left", fs=8.5)
    handles = [Patch(fc=_tint(c, 0.35), ec=c, label=t) for c, t in ((SIGN_COLOR, "sign"), (EXP_COLOR, "exponent"),
                                                                    (MANT_COLOR, "mantissa / value"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    _label(ax, 6.0, 0.75, "More exponent bits: wider range.  More mantissa bits: finer steps.  bf16 keeps fp32's "
                          "range with 8 bits of precision; e4m3 trades range for precision, e5m2 the reverse.", fs=9)
    return fig


# --------------------------------------------------------------------------------------------------- 12. FP8 training
FP8_FWD_COLOR, FP8_BWD_COLOR, MASTER_COLOR = "#4c72b0", "#c44e52", "#3a3a3a"  # e4m3 forward, e5m2 backward, float32


def fp8_training_step(cfg: Llama4Config, title: str | None = None) -> VizFigure:
    """One linear of FP8 training (`fp8.Fp8Matmul`), drawn on an expert's gate|up projection of cfg: x [T, D] and
    the float32 master weight W [2F, D] are cast to e4m3 with one scale each from their amax (current scaling), the
    scaled matmul gives y; in the backward pass the output gradient is cast to e5m2 the same way and two more scaled
    matmuls give ∂x and ∂W, which updates the float32 master weight (AdamW in float32)."""
    _check_config(cfg)
    D, F2 = cfg.hidden_size, 2 * cfg.intermediate_size
    fig, ax = _canvas(12.0, 6.6, title or f"one FP8 training step of a linear: x [T, {D}] · Wᵀ, W [{F2}, {D}]")
    yx, yw, yg = 5.0, 3.85, 1.55  # rows: activations, weights, output gradient
    h, w = 0.72, 1.9
    _label(ax, 0.15, 5.95, "forward: e4m3 (3 mantissa bits, max 448)", ha="left", fs=10, weight="bold",
           color=FP8_FWD_COLOR)
    _label(ax, 0.15, 2.55, "backward: e5m2 (2 mantissa bits, max 57344)", ha="left", fs=10, weight="bold",
           color=FP8_BWD_COLOR)
    rows = ((yx, "x", f"activations x\nfloat32 [T, {D}]", "0.45", "sx", "s_x = amax(|x|) / 448", "qx",
             f"q_x  e4m3 [T, {D}]", FP8_FWD_COLOR),
            (yw, "w", f"master weight W\nfloat32 [{F2}, {D}]", MASTER_COLOR, "sw", "s_w = amax(|W|) / 448", "qw",
             f"q_w  e4m3 [{F2}, {D}]", FP8_FWD_COLOR),
            (yg, "g", f"gradient ∂y\nfloat32 [T, {F2}]", "0.45", "sg", "s_g = amax(|∂y|) / 57344", "qg",
             f"q_g  e5m2 [T, {F2}]", FP8_BWD_COLOR))
    for y, g0, t0, c0, g1, t1, g2, t2, c2 in rows:
        _box(ax, 0.15, y, w, h, t0, c0, gid=g0, fs=9)
        _arrow(ax, (0.15 + w, y + h / 2), (2.55, y + h / 2))
        _box(ax, 2.55, y, 2.2, h, t1, c2, fill=0.08, gid=g1, fs=9)
        _arrow(ax, (4.75, y + h / 2), (5.15, y + h / 2))
        _box(ax, 5.15, y, 2.0, h, t2 + "\nq = sat(· / s)", c2, fill=0.3, gid=g2, fs=9)
    # forward: the scaled matmul
    _box(ax, 8.0, 4.3, 3.85, 1.2, f"scaled matmul\ny = (q_x q_wᵀ) · s_x s_w\nfloat32 [T, {F2}]", FP8_FWD_COLOR,
         fill=0.15, gid="mm", fs=9.5)
    _arrow(ax, (7.15, yx + h / 2), (8.0, yx + h / 2 - 0.05))
    _arrow(ax, (7.15, yw + h / 2), (7.55, yw + h / 2), (7.55, 4.55), (8.0, 4.55))
    # backward: two scaled matmuls, with the saved forward operands
    _box(ax, 8.0, 2.05, 3.85, 0.75, f"∂x = (q_g s_g)(q_w s_w)   [T, {D}]\n→ the layer below", FP8_BWD_COLOR,
         fill=0.15, gid="dx", fs=9)
    _box(ax, 8.0, 1.05, 3.85, 0.75, f"∂W = (q_g s_g)ᵀ(q_x s_x)   float32 [{F2}, {D}]", FP8_BWD_COLOR, fill=0.15,
         gid="dw", fs=9)
    _arrow(ax, (7.15, yg + h / 2), (7.55, yg + h / 2), (7.55, 2.42), (8.0, 2.42))
    _arrow(ax, (7.55, yg + h / 2), (7.55, 1.42), (8.0, 1.42))
    _arrow(ax, (9.9, 4.3), (9.9, 2.8), ls="--", color="0.45", gid="saved")
    _label(ax, 10.0, 3.55, "q_x, s_x, q_w, s_w\nsaved by the forward", ha="left", fs=8.5, color="0.35")
    _box(ax, 8.0, 0.2, 3.85, 0.6, "AdamW updates the float32 master W", MASTER_COLOR, fill=0.1, gid="adamw", fs=9)
    _arrow(ax, (9.9, 1.05), (9.9, 0.8))
    _label(ax, 0.15, 0.75, "Current scaling: each scale from this step's tensor.  One scale per tensor: x and ∂y are\n"
                           "contracted along one axis in the forward and another in ∂W.", ha="left", fs=9)
    return fig


# --------------------------------------------------------------------------------------------------- MetaP
METAP_COLORS = {"embedding": "#8c8c8c", "norm": NORM_COLOR, "hidden": "#4c72b0", "branch_out": "#c44e52",
                "router": ROUTER_COLOR, "readout": "#55a868"}


def metap_groups(cfg: Llama4Config, title: str | None = None) -> VizFigure:
    """The residual stream of cfg (embedding → L × [attention branch ⊕, FFN branch ⊕] → lm_head) with every weight
    coloured by its MetaP group and labelled with that group's init × and lr × (`metap.scales(cfg)`: all 1 under
    "standard" or at the base shape). The residual scale 1/d sits in the last weight of each branch."""
    _check_config(cfg)
    s = metap.scales(cfg)
    m, d = metap.multipliers(cfg)
    fig, ax = _canvas(12.0, 5.2, title or (
        f"{cfg.parametrization}: D = {cfg.hidden_size}, L = {cfg.num_hidden_layers} against the base "
        f"D₀ = {cfg.base_hidden_size}, L₀ = {cfg.base_num_layers}  (m = {m:g}, d = {d:g})"))
    yr, yb, h, w = 3.75, 2.05, 0.75, 0.98  # the residual line, the branch row, box height and width

    def weight(x, y, name, group, gid):
        _box(ax, x, y, w, h, name, METAP_COLORS[group], fill=0.25, gid=f"{group}:{gid}", fs=9)
        _label(ax, x + w / 2, y - 0.3, f"init ×{s[group].init:.3g}\nlr ×{s[group].lr:.3g}", fs=8.5, color="0.25",
               gid=f"scale:{gid}")

    weight(0.15, yr - h / 2, "embed_\ntokens", "embedding", "embed")
    weight(10.85, yr - h / 2, "lm_head", "readout", "lm_head")
    _arrow(ax, (0.15 + w, yr), (10.85, yr), head=True)
    branches = ((1.45, [("RMSNorm", "norm", "attn_norm"), ("q, k, v", "hidden", "qkv"), ("o_proj", "branch_out", "o")]),
                (5.55, [("RMSNorm", "norm", "ffn_norm"), ("router", "router", "router"),
                        ("gate, up\n(experts,\nshared)", "hidden", "gate_up"), ("down_proj", "branch_out", "down")]))
    for x0, boxes in branches:
        _arrow(ax, (x0, yr), (x0, yb + h / 2), (x0 + 0.15, yb + h / 2))
        x = x0 + 0.15
        for i, (name, group, gid) in enumerate(boxes):
            if i:
                _arrow(ax, (x - 0.17, yb + h / 2), (x, yb + h / 2))
            weight(x, yb, name, group, gid)
            x += w + 0.17
        plus = x + 0.1
        _arrow(ax, (x - 0.17, yb + h / 2), (plus, yb + h / 2), (plus, yr - 0.17))
        _op(ax, plus, yr, "+", gid=f"add:{gid}")
        _label(ax, plus - 0.1, yb + h + 0.4, f"× 1/d = {1 / d:.3g}\nfolded into {boxes[-1][0]}", ha="right", fs=8,
               color=METAP_COLORS["branch_out"], gid=f"fold:{gid}")
    ax.add_patch(FancyBboxPatch((1.3, 1.25), 9.35, 3.05, boxstyle="round,pad=0,rounding_size=0.1", fc="none",
                                ec="0.55", lw=1.0, ls=(0, (4, 2)), gid="layers"))
    _label(ax, 1.4, 4.5, f"× {cfg.num_hidden_layers} layers (the last RMSNorm, before lm_head, is a norm too)",
           ha="left", fs=9, color="0.35")
    handles = [Patch(fc=_tint(c, 0.25), ec=c, label=g) for g, c in METAP_COLORS.items()]
    ax.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9,
              bbox_to_anchor=(0.5, 0.1))
    return fig

