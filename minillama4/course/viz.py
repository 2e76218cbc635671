"""The course's static pictures. Each function builds a matplotlib Figure directly (no pyplot) and returns it.

    token_experts              a text span as boxes, each token's box in its top-1 expert's colour (opacity = score)
    token_experts_by_layer     MoE layer × token grid of the top-1 expert, the token strings along the x axis
    expert_load                MoE layer × expert heatmap of each expert's share of tokens (white = uniform 1/E)
    expert_load_over_training  expert × training step heatmap (or stacked area) of one layer's load
    router_entropy             mean router entropy per layer (bars), or per layer over training (lines); max ln E marked
    attention_mask             a boolean query × key mask as an image, attention-chunk boundaries as lines
    attention_maps             layer × head grid of attention weights, "layer i · RoPE (chunked)" / "NoPE (global)"
    temperature_curve          the NoPE query scale 1 + β·ln(⌊(p+1)/F⌋ + 1) against the position p
    loss_curves                one line per named run (train / val, dense / MoE, …)

Helpers: `expert_color(e)` is expert e's colour in every picture (tab10, then tab20's light shades, tab20b, tab20c);
`routing_top1` / `routing_load` / `routing_entropy` turn `model(ids, return_routing=True)[1]` into the arrays these
pictures take; `figure_to_png` gives PNG bytes (for ipywidgets explorers).

Inputs may be torch tensors or NumPy arrays. Nothing here touches pyplot's global state: figures render headless,
never pile up, and show themselves as PNG when a notebook cell returns one (they are `VizFigure`s, plain matplotlib
Figures with a `_repr_png_`). Bad input (wrong shapes, lengths that disagree) raises ValueError naming the argument.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize, PowerNorm, TwoSlopeNorm, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ..attention import temperature_scale

MONO = "DejaVu Sans Mono"  # ships with matplotlib, has ␣ ↵ ⇥
CHUNK_LINE = dict(color="#d62728", lw=1.0, alpha=0.9)  # attention-chunk boundaries, in every picture
ROPE_COLOR, NOPE_COLOR = "#1f4e8c", "#b35900"  # RoPE (chunked) layers blue, NoPE (global) layers orange
MASK_ATTENDS, MASK_MASKED = "#2f5d9e", "#f2f2f2"  # attention-mask cells: may attend / masked
LOAD_CMAP = "RdBu_r"  # expert load: blue = starved, white = uniform 1/E, red = overloaded
VISIBLE_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥"}


class VizFigure(Figure):
    """A matplotlib Figure that displays itself as PNG when it is the value of a notebook cell."""

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a Figure to PNG bytes (tight bounding box, white background), e.g. for an ipywidgets Image/Output."""
    if not isinstance(fig, Figure):
        raise ValueError(f"figure_to_png expects a matplotlib Figure, got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------- helpers
def _np(x, name: str) -> np.ndarray:
    """A torch tensor (any device/dtype, with or without grad) or array-like → NumPy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.float()  # bfloat16 / float16 have no NumPy equivalent
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # ragged lists etc.
        raise ValueError(f"{name} must be a tensor or array-like, got {type(x).__name__}: {e}") from None


def _float(x, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    a = _np(x, name)
    if a.ndim not in ndims or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be a {want} numeric array, got shape {a.shape} of dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def _ints(x, name: str) -> np.ndarray:
    a = _np(x, name)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name} must hold integer expert ids, got dtype {a.dtype}")
    return a.astype(np.int64)


def _check_experts(ids: np.ndarray, n_experts: int | None, name: str) -> int:
    """Validate expert ids and return the number of experts (given, or max id + 1)."""
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} has a negative expert id ({ids.min()})")
    E = int(ids.max()) + 1 if n_experts is None else n_experts
    if not isinstance(E, (int, np.integer)) or E <= 0:
        raise ValueError(f"n_experts must be a positive int, got {n_experts!r}")
    if ids.size and ids.max() >= E:
        raise ValueError(f"{name} has expert id {ids.max()} but n_experts={E}")
    return int(E)


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool)
                                   or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _layer_labels(layer_ids, n: int) -> list[int]:
    if layer_ids is None:
        return list(range(n))
    layer_ids = [int(i) for i in layer_ids]
    if len(layer_ids) != n:
        raise ValueError(f"layer_ids has {len(layer_ids)} entries for {n} layers")
    return layer_ids


def _steps(steps, n: int) -> tuple[np.ndarray, str]:
    """Training steps for n snapshots (default 0 … n-1, labelled as snapshot numbers) and the x-axis label."""
    if steps is None:
        return np.arange(n), "snapshot"
    s = _float(steps, "steps", (1,))
    if len(s) != n:
        raise ValueError(f"steps has {len(s)} entries for {n} snapshots")
    return s, "training step"


def _tick_positions(n: int, max_ticks: int) -> np.ndarray:
    """At most max_ticks evenly spread indices out of n (always including the first)."""
    return np.arange(0, n, max(1, math.ceil(n / max_ticks)))


def _text_color(rgba) -> str:
    """Black or white, whichever reads better on this (possibly translucent, over white) colour."""
    r, g, b, a = rgba
    r, g, b = (a * c + (1 - a) for c in (r, g, b))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def show_token(token: str) -> str:
    """A token string made visible: spaces ␣, newlines ↵, tabs ⇥, other control characters escaped, '' → ∅."""
    out = []
    for ch in token:
        if ch in VISIBLE_WHITESPACE:
            out.append(VISIBLE_WHITESPACE[ch])
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out) or "∅"


def _tokens(tokens, name: str = "tokens") -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise ValueError(f"{name} must be a list of token strings (decode each id), got {type(tokens).__name__}")
    if not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{name} must hold strings only")
    return list(tokens)


# --------------------------------------------------------------------------------------------------- expert colours
_PALETTE = (list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors[1::2])
            + list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors))


def expert_color(e: int) -> tuple[float, float, float, float]:
    """Expert e's RGBA colour, the same in every picture whatever the number of experts: tab10 for 0-9, tab20's light
    shades for 10-19, tab20b for 20-39, tab20c for 40-59, then golden-ratio hues."""
    e = int(e)
    if e < 0:
        raise ValueError(f"expert id must be >= 0, got {e}")
    if e < len(_PALETTE):
        return (*_PALETTE[e], 1.0)
    return (*hsv_to_rgb(((e * 0.6180339887) % 1.0, 0.55, 0.85)), 1.0)


def expert_colormap(n_experts: int) -> tuple[ListedColormap, BoundaryNorm]:
    """A discrete colour map + norm for images of expert ids 0 … n_experts-1 (colours from expert_color)."""
    cmap = ListedColormap([expert_color(e) for e in range(n_experts)], name=f"experts{n_experts}")
    return cmap, BoundaryNorm(np.arange(n_experts + 1) - 0.5, n_experts)


def _expert_legend(fig: Figure, experts, loc: str, ncol: int, anchor, title: str | None = None):
    handles = [Patch(facecolor=expert_color(e), edgecolor="none", label=f"expert {e}") for e in experts]
    return fig.legend(handles=handles, loc=loc, ncol=ncol, bbox_to_anchor=anchor, frameon=False, fontsize=9,
                      title=title, title_fontsize=9, handlelength=1.2, columnspacing=1.2)


# --------------------------------------------------------------------------------------------------- from routing
def routing_top1(routing, seq_len: int | None = None, row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 expert ids and scores [L, T] of one sequence, from the RouterOutputs of `model(ids, return_routing=True)`
    (one per MoE layer, tokens flattened batch-major). seq_len = T of the batch (default: the batch has one row)."""
    if not routing:
        raise ValueError("routing is empty: the model has no MoE layer, or return_routing=True was not passed")
    n = routing[0].indices.shape[0]
    T = n if seq_len is None else int(seq_len)
    if T <= 0 or n % T or not 0 <= row < n // T:
        raise ValueError(f"cannot take row {row} of length {seq_len} out of {n} routed tokens")
    ids = np.stack([_ints(r.indices[row * T:(row + 1) * T, 0], "routing indices") for r in routing])
    scores = np.stack([_np(r.scores[row * T:(row + 1) * T, 0], "routing scores").astype(np.float64) for r in routing])
    return ids, scores


def routing_load(routing) -> np.ndarray:
    """[L, E] share of the routed (token, slot) assignments each expert received in each MoE layer (rows sum to 1;
    the same definition as minillama4.train.evaluate)."""
    if not routing:
        raise ValueError("routing is empty: the model has no MoE layer, or return_routing=True was not passed")
    rows = []
    for r in routing:
        E = r.logits.shape[-1]
        counts = np.bincount(_ints(r.indices, "routing indices").reshape(-1), minlength=E).astype(np.float64)
        rows.append(counts / max(1.0, counts.sum()))
    return np.stack(rows)


def routing_entropy(routing) -> np.ndarray:
    """[L] mean over tokens of the entropy (nats) of softmax(router logits); at most ln E (uniform router)."""
    if not routing:
        raise ValueError("routing is empty: the model has no MoE layer, or return_routing=True was not passed")
    out = []
    for r in routing:
        logp = torch.log_softmax(r.logits.detach().float(), dim=-1)
        out.append(float(-(logp.exp() * logp).sum(-1).mean()))
    return np.array(out)


# --------------------------------------------------------------------------------------------------- 1. tokens
def token_experts(tokens: Sequence[str], expert_ids, scores=None, n_experts: int | None = None,
                  title: str | None = None, max_per_row: int = 16, row_chars: int = 80, fontsize: float = 11,
                  break_on_newline: bool = True) -> Figure:
    """A text span as a row-wrapped sequence of boxes, one per token, each filled with its top-1 expert's colour.

    expert_ids [T] or [T, k] (column 0 = top-1 is drawn); scores [T] or [T, k] router scores in [0, 1], shown as the
    fill opacity (default: all opaque). Rows hold at most max_per_row tokens and about row_chars characters; a token
    with a newline ends its row. Whitespace is drawn visibly (␣ space, ↵ newline, ⇥ tab)."""
    toks = _tokens(tokens)
    ids = _ints(expert_ids, "expert_ids")
    if ids.ndim == 2:
        ids = ids[:, 0]
    if ids.ndim != 1 or len(ids) != len(toks):
        raise ValueError(f"expert_ids must be [T] or [T, k] with T = len(tokens) = {len(toks)}, got shape "
                         f"{_np(expert_ids, 'expert_ids').shape}")
    if not toks:
        raise ValueError("tokens is empty")
    E = _check_experts(ids, n_experts, "expert_ids")
    alpha = np.full(len(toks), 0.85)
    if scores is not None:
        sc = _float(scores, "scores", (1, 2))
        sc = sc[:, 0] if sc.ndim == 2 else sc
        if len(sc) != len(toks):
            raise ValueError(f"scores has {len(sc)} entries for {len(toks)} tokens")
        if np.any(sc < 0) or np.any(sc > 1) or not np.all(np.isfinite(sc)):
            raise ValueError("scores must lie in [0, 1] (the router's sigmoid scores)")
        alpha = 0.12 + 0.88 * sc
    if max_per_row < 1 or row_chars < 1:
        raise ValueError(f"max_per_row and row_chars must be >= 1, got {max_per_row}, {row_chars}")

    # layout, in character widths (x) and rows (y)
    pad, gap = 1.0, 0.4
    labels = [show_token(t) for t in toks]
    rows, row, x = [], [], 0.0
    for i, lab in enumerate(labels):
        w = len(lab) + pad
        if row and (len(row) >= max_per_row or x + w > row_chars):
            rows.append(row)
            row, x = [], 0.0
        row.append((i, x, w))
        x += w + gap
        if break_on_newline and "\n" in toks[i]:
            rows.append(row)
            row, x = [], 0.0
    if row:
        rows.append(row)
    width = max(max(x0 + w for _, x0, w in r) for r in rows)

    # sizes in inches: a monospace character is 0.6 em wide; a row is 2.1 em high
    cw, rh, margin = 0.6 * fontsize / 72, 2.1 * fontsize / 72, 0.2
    used = sorted(set(ids.tolist())) if E > 16 else range(E)
    fig_w = max(width * cw + 2 * margin, 5.0)
    max_col = max(1, int((fig_w - 0.4) / 1.05))
    legend_rows = math.ceil(len(used) / max_col)
    ncol = math.ceil(len(used) / legend_rows)  # balanced rows
    legend_h = 0.22 * legend_rows + (0.3 if scores is not None else 0.1)
    title_h = 0.4
    ax_h = len(rows) * rh
    fig_h = title_h + ax_h + legend_h + 2 * margin
    fig = VizFigure(figsize=(fig_w, fig_h))
    ax_w = width * cw
    ax = fig.add_axes(((fig_w - ax_w) / 2 / fig_w, (margin + legend_h) / fig_h, ax_w / fig_w, ax_h / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    for r, row in enumerate(rows):
        for i, x0, w in row:
            c = expert_color(ids[i])
            face = (*c[:3], float(alpha[i]))
            ax.add_patch(Rectangle((x0, r + 0.12), w, 0.76, facecolor=face, edgecolor=c, lw=1.0))
            ax.text(x0 + w / 2, r + 0.5, labels[i], ha="center", va="center", fontsize=fontsize, family=MONO,
                    color=_text_color(face), parse_math=False)
    fig.suptitle(title or f"top-1 expert of each token ({E} experts)", y=1 - margin / 2 / fig_h, va="top")
    note = "opacity = router score" if scores is not None else None
    _expert_legend(fig, used, "lower center", ncol, (0.5, margin / 2 / fig_h), title=note)
    return fig


def token_experts_by_layer(tokens: Sequence[str], expert_ids_LT, n_experts: int, layer_ids=None,
                           title: str | None = None, max_labels: int = 96) -> Figure:
    """MoE layer × token grid, each cell in the colour of that token's top-1 expert in that layer.

    expert_ids_LT [L, T] or [L, T, k] (column 0 drawn); layer_ids: the model layer index of each row (e.g.
    cfg.moe_layers; default 0 … L-1). The token strings label the x axis (every one up to max_labels tokens)."""
    toks = _tokens(tokens)
    ids = _ints(expert_ids_LT, "expert_ids_LT")
    if ids.ndim == 3:
        ids = ids[..., 0]
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] != len(toks) or ids.shape[0] == 0:
        raise ValueError(f"expert_ids_LT must be [L, T] with T = len(tokens) = {len(toks)}, got shape "
                         f"{_np(expert_ids_LT, 'expert_ids_LT').shape}")
    E = _check_experts(ids, n_experts, "expert_ids_LT")
    L, T = ids.shape
    names = _layer_labels(layer_ids, L)
    labels = [show_token(t) for t in toks]
    every = _tick_positions(T, max_labels)
    longest = max(len(labels[i]) for i in every)

    fig = VizFigure(figsize=(min(max(5.0, 0.2 * T + 2.6), 26.0), 0.38 * L + 1.2 + 0.085 * longest),
                    layout="constrained")
    ax = fig.add_subplot()
    cmap, norm = expert_colormap(E)
    im = ax.imshow(ids, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(every, [labels[i] for i in every], rotation=90, family=MONO, fontsize=8, parse_math=False)
    ax.set_yticks(range(L), [f"layer {n}" for n in names])
    ax.set_xticks(np.arange(T + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(L + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=0.6)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("token")
    ax.set_title(title or "top-1 expert per MoE layer")
    cb = fig.colorbar(im, ax=ax, ticks=_tick_positions(E, 16), fraction=0.04, pad=0.01)
    cb.set_label("expert")
    return fig


# --------------------------------------------------------------------------------------------------- 2. load, entropy
def _load_norm(load: np.ndarray, E: int) -> TwoSlopeNorm:
    u = 1.0 / E
    return TwoSlopeNorm(vcenter=u, vmin=0.0, vmax=max(2 * u, float(load.max()) * 1.02, u * 1.0001 + 1e-9))


def _load_colorbar(fig: Figure, im, ax, E: int, **kw):
    cb = fig.colorbar(im, ax=ax, **kw)
    cb.set_label(f"fraction of tokens\n(uniform 1/E = {1 / E:.3g})")
    cb.ax.axhline(1 / E, color="black", lw=1.2)
    return cb


def _check_load(load: np.ndarray, name: str, normalize: bool) -> np.ndarray:
    if not np.all(np.isfinite(load)) or np.any(load < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    if normalize:
        load = load / np.clip(load.sum(-1, keepdims=True), 1e-12, None)
    elif np.any(load > 1 + 1e-6):
        raise ValueError(f"{name} holds values > 1: pass fractions of tokens, or counts with normalize=True")
    return load


def expert_load(load_LE, title: str | None = None, layer_ids=None, annotate: bool | None = None,
                normalize: bool = False) -> Figure:
    """MoE layer × expert heatmap of the fraction of tokens each expert received.

    load_LE [L, E] (or [E] for one layer): fractions (e.g. `routing_load(routing)` or one entry of
    `History.expert_load`), or counts with normalize=True. Colours diverge around the uniform share 1/E (white,
    marked on the colour bar): red = overloaded, blue = starved. Cells carry their value when annotate (default:
    when there are at most 128 cells)."""
    load = _float(load_LE, "load_LE", (1, 2))
    load = _check_load(load[None] if load.ndim == 1 else load, "load_LE", normalize)
    L, E = load.shape
    names = _layer_labels(layer_ids, L)
    fig = VizFigure(figsize=(min(max(4.5, 0.5 * E + 2.6), 18.0), max(2.4, 0.45 * L + 1.5)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(load, cmap=LOAD_CMAP, norm=_load_norm(load, E), aspect="auto", interpolation="nearest")
    ax.set_xticks(_tick_positions(E, 32))
    ax.set_yticks(range(L), [f"layer {n}" for n in names])
    ax.set_xlabel("expert")
    ax.set_title(title or "share of tokens per expert")
    if annotate or (annotate is None and L * E <= 128):
        for l in range(L):
            for e in range(E):
                ax.text(e, l, f"{load[l, e]:.2f}", ha="center", va="center", fontsize=8,
                        color=_text_color(im.cmap(im.norm(load[l, e]))))
    _load_colorbar(fig, im, ax, E)
    return fig


def expert_load_over_training(load_SE, steps=None, layer: int | None = None, kind: str = "heatmap",
                              title: str | None = None, normalize: bool = False) -> Figure:
    """One MoE layer's expert load across training snapshots.

    load_SE [S, E], or [S, L, E] with `layer` choosing the MoE layer (as `History.expert_load`, whose steps are
    `History.eval_steps`). kind="heatmap": experts on the y axis, snapshots on the x axis, coloured like
    `expert_load`; the image is load_SE transposed. kind="area": stacked shares in the experts' colours, with the
    uniform boundaries k/E dotted."""
    load = _float(load_SE, "load_SE", (2, 3))
    where = ""
    if load.ndim == 3:
        if layer is None:
            if load.shape[1] != 1:
                raise ValueError(f"load_SE is [S, L, E] with L = {load.shape[1]} layers: choose one with layer=")
            layer = 0
        if not -load.shape[1] <= layer < load.shape[1]:
            raise ValueError(f"layer={layer} out of range for {load.shape[1]} layers")
        load = load[:, layer]
    if layer is not None:
        where = f" · MoE layer {layer}"
    load = _check_load(load, "load_SE", normalize)
    S, E = load.shape
    x, xlabel = _steps(steps, S)
    if kind not in ("heatmap", "area"):
        raise ValueError(f"kind must be 'heatmap' or 'area', got {kind!r}")
    fig = VizFigure(figsize=(min(max(5.0, 0.3 * S + 3.0), 14.0), min(max(3.0, 0.3 * E + 1.4), 10.0)),
                    layout="constrained")
    ax = fig.add_subplot()
    if kind == "heatmap":
        im = ax.imshow(load.T, cmap=LOAD_CMAP, norm=_load_norm(load, E), aspect="auto", interpolation="nearest")
        ticks = _tick_positions(S, 12)
        ax.set_xticks(ticks, [f"{v:g}" for v in x[ticks]])
        ax.set_yticks(_tick_positions(E, 32))
        ax.set_ylabel("expert")
        _load_colorbar(fig, im, ax, E)
    else:
        ax.stackplot(x, load.T, colors=[expert_color(e) for e in range(E)], labels=[f"expert {e}" for e in range(E)],
                     alpha=0.9)
        for k in range(1, E):
            ax.axhline(k / E, color="black", lw=0.6, ls=":", alpha=0.6)
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(0, max(1.0, float(load.sum(-1).max())))
        ax.set_ylabel("share of tokens (stacked)")
        if E <= 20:  # top entry = top band
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
                      fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title or f"expert load over training{where}")
    return fig


def router_entropy(entropy, steps=None, n_experts: int | None = None, layer_ids=None,
                   title: str | None = None) -> Figure:
    """Router entropy (nats; e.g. `routing_entropy(routing)`), with the maximum ln E of a uniform router dashed.

    entropy [L]: one bar per MoE layer. entropy [S, L]: one line per layer over the training snapshots `steps`.
    Pass n_experts to mark ln E (and to check no value exceeds it)."""
    h = _float(entropy, "entropy", (1, 2))
    if not np.all(np.isfinite(h)) or np.any(h < -1e-6):
        raise ValueError("entropy must be finite and >= 0")
    hmax = None
    if n_experts is not None:
        if not isinstance(n_experts, (int, np.integer)) or n_experts <= 0:
            raise ValueError(f"n_experts must be a positive int, got {n_experts!r}")
        hmax = math.log(n_experts)
        if np.any(h > hmax + 1e-4):
            raise ValueError(f"entropy {h.max():.4f} exceeds ln E = {hmax:.4f} for n_experts={n_experts}: "
                             "wrong n_experts, or not an entropy in nats")
    L = h.shape[-1]
    names = _layer_labels(layer_ids, L)
    fig = VizFigure(figsize=(max(4.5, 0.5 * L + 2.5) if h.ndim == 1 else 6.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    if h.ndim == 1:
        ax.bar(range(L), h, color="#4c72b0", width=0.7)
        ax.set_xticks(range(L), [str(n) for n in names])
        ax.set_xlabel("MoE layer")
        ax.set_title(title or "router entropy per layer")
    else:
        x, xlabel = _steps(steps, h.shape[0])
        cmap = colormaps["viridis"]
        for l in range(L):
            ax.plot(x, h[:, l], color=cmap(l / max(1, L - 1) * 0.9), marker="o" if len(x) <= 30 else None, ms=3,
                    label=f"layer {names[l]}")
        ax.set_xlabel(xlabel)
        ax.set_title(title or "router entropy over training")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    if hmax is not None:
        ax.axhline(hmax, color="black", ls="--", lw=1.2)
        ax.annotate(f"max = ln {n_experts} = {hmax:.2f} (uniform router)", (1.0, hmax), xytext=(-3, 3),
                    xycoords=ax.get_yaxis_transform(), textcoords="offset points", ha="right", va="bottom",
                    fontsize=8, bbox=dict(fc="white", ec="none", pad=1.0))
        ax.set_ylim(0, hmax * 1.12)
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel("entropy (nats)")
    ax.grid(axis="y", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------------- 3. attention
def _chunk_lines(ax, chunk_size: int, n_rows: int, n_cols: int) -> None:
    """Boundaries between attention chunks (positions C, 2C, …), for a query × key image starting at position 0."""
    for b in range(chunk_size, max(n_rows, n_cols), chunk_size):
        if b < n_cols:
            ax.axvline(b - 0.5, **CHUNK_LINE)
        if b < n_rows:
            ax.axhline(b - 0.5, **CHUNK_LINE)


def attention_mask(mask_TS, chunk_size: int | None = None, title: str | None = None) -> Figure:
    """A boolean mask [T, S] (True = query p may attend to key s; e.g. `minillama4.attention.attention_mask`) as an
    image, with the attention-chunk boundaries (multiples of chunk_size) as red lines when chunk_size is given."""
    m = _np(mask_TS, "mask_TS")
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask_TS must be a non-empty 2-D [T, S] array, got shape {m.shape}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or not np.all((m == 0) | (m == 1)):
            raise ValueError("mask_TS must be boolean (or 0/1)")
    _check_chunk(chunk_size)
    m = m.astype(np.float64)
    T, S = m.shape
    side = min(max(3.5, 0.16 * max(T, S) + 1.5), 6.0)
    fig = VizFigure(figsize=(side * min(1.6, max(0.7, S / T)) + 0.3, side + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(m, cmap=ListedColormap([MASK_MASKED, MASK_ATTENDS]), vmin=0, vmax=1, interpolation="nearest")
    if max(T, S) <= 40:  # thin cell borders, so positions can be counted
        ax.set_xticks(np.arange(S + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(T + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=0.5)
        ax.tick_params(which="minor", length=0)
    if chunk_size is not None:
        _chunk_lines(ax, chunk_size, T, S)
    for axis, n in ((ax.xaxis, S), (ax.yaxis, T)):
        axis.set_major_locator(MaxNLocator(nbins=min(n, 16), integer=True))
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position p")
    ax.set_title(title or ("causal mask" if chunk_size is None else f"chunked causal mask (chunk = {chunk_size})"))
    handles = [Patch(facecolor=MASK_ATTENDS, label="attends"),
               Patch(facecolor=MASK_MASKED, edgecolor="0.7", label="masked")]
    if chunk_size is not None:
        handles.append(Line2D([], [], **CHUNK_LINE, label="chunk boundary"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    return fig


def _weights_list(weights, batch: int) -> list[np.ndarray]:
    """weights [L, H, T, S] (or [L, B, H, T, S]) or a list of per-layer [H, T, S] / [B, H, T, S]
    → a list of [H, T, S] (row `batch` of batched weights)."""
    if isinstance(weights, (list, tuple)):
        layers = [_float(w, f"weights[{i}]", (3, 4)) for i, w in enumerate(weights)]
        if not layers:
            raise ValueError("weights is an empty list")
    else:
        a = _float(weights, "weights", (4, 5))
        layers = list(a)
    out = []
    for i, w in enumerate(layers):
        if w.ndim == 4:
            if not 0 <= batch < w.shape[0]:
                raise ValueError(f"batch={batch} out of range for weights[{i}] of shape {w.shape}")
            w = w[batch]
        if w.ndim != 3:
            raise ValueError(f"weights[{i}] must be [H, T, S], got shape {w.shape}")
        if not np.all(np.isfinite(w)) or w.min() < 0 or w.max() > 1 + 1e-5:
            raise ValueError(f"weights[{i}] must be attention probabilities in [0, 1]")
        out.append(w)
    return out


def attention_maps(weights, layer_uses_rope: Sequence[bool], chunk_size: int | None = None, heads=None, layers=None,
                   scale: str = "power", gamma: float = 0.4, batch: int = 0, title: str | None = None,
                   panel_size: float = 2.3) -> Figure:
    """Grid of attention maps: one row per layer, one column per head.

    weights: [L, H, T, S] or a list with one [H, T, S] (or [B, H, T, S], row `batch`) per layer, from
    `Attention.forward(..., return_weights=True)` on a fresh sequence (queries and keys at positions 0 …).
    layer_uses_rope[i] says whether layer i is a RoPE layer (`cfg.uses_rope(i)`). Panels are titled
    "layer i · RoPE (chunked)" (chunk boundaries drawn, when chunk_size is given), "layer i · RoPE (global)" or
    "layer i · NoPE (global)". layers / heads choose what to draw (default: all layers, the first 8 heads).
    Colours are shared by all panels: scale="power" (w^gamma), "log" (10⁻³ … 1) or "linear"; exactly-zero
    (masked) weights are white."""
    ws = _weights_list(weights, batch)
    rope = [bool(r) for r in layer_uses_rope]
    if len(rope) != len(ws):
        raise ValueError(f"layer_uses_rope has {len(rope)} entries for {len(ws)} layers of weights")
    _check_chunk(chunk_size)
    layers = list(range(len(ws))) if layers is None else [int(i) for i in layers]
    if not layers or any(not 0 <= i < len(ws) for i in layers):
        raise ValueError(f"layers must be a non-empty list of indices in [0, {len(ws)}), got {layers}")
    H = min(w.shape[0] for w in ws)
    heads = list(range(min(H, 8))) if heads is None else [int(h) for h in heads]
    if not heads or any(not 0 <= h < H for h in heads):
        raise ValueError(f"heads must be a non-empty list of indices in [0, {H}), got {heads}")
    if scale == "power":
        norm, how = PowerNorm(gamma, vmin=0.0, vmax=1.0), f"colour ∝ w^{gamma:g}"
    elif scale == "log":
        norm, how = LogNorm(vmin=1e-3, vmax=1.0, clip=True), "log colour scale"
    elif scale == "linear":
        norm, how = Normalize(0.0, 1.0), "linear colour scale"
    else:
        raise ValueError(f"scale must be 'power', 'log' or 'linear', got {scale!r}")
    cmap = colormaps["viridis"].with_extremes(bad="white")

    R, C = len(layers), len(heads)
    fig = VizFigure(figsize=(panel_size * C + 1.0, panel_size * R + 0.6 + 0.3 * bool(title)), layout="constrained")
    axes = fig.subplots(R, C, squeeze=False)
    im = None
    for r, l in enumerate(layers):
        kind = ("RoPE (chunked)" if chunk_size is not None else "RoPE (global)") if rope[l] else "NoPE (global)"
        T, S = ws[l].shape[1:]
        for c, h in enumerate(heads):
            ax = axes[r, c]
            im = ax.imshow(np.ma.masked_equal(ws[l][h], 0.0), cmap=cmap, norm=norm, interpolation="nearest")
            if rope[l] and chunk_size is not None:
                _chunk_lines(ax, chunk_size, T, S)
            ax.set_title(f"layer {l} · {kind}\nhead {h}", fontsize=9, color=ROPE_COLOR if rope[l] else NOPE_COLOR)
            for axis, n in ((ax.xaxis, S), (ax.yaxis, T)):
                axis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            ax.tick_params(labelsize=7)
            if r == R - 1:
                ax.set_xlabel("key", fontsize=8)
            if c == 0:
                ax.set_ylabel("query", fontsize=8)
    cb = fig.colorbar(im, ax=axes, shrink=min(1.0, 0.6 + 0.1 * R), fraction=0.03, aspect=30, pad=0.02)
    cb.set_label(f"attention weight ({how}; white = masked)", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def temperature_curve(positions, floor_scale: int, attn_scale: float, title: str | None = None,
                      log_x: bool | None = None) -> Figure:
    """The query scale of NoPE layers, 1 + attn_scale · ln(⌊(p+1)/floor_scale⌋ + 1), against the position p
    (computed by `minillama4.attention.temperature_scale`). positions: an int n (positions 0 … n-1) or a 1-D array.
    log_x (default: when positions reach 100 × floor_scale) plots against p + 1 on a log axis."""
    if isinstance(positions, (int, np.integer)) and not isinstance(positions, bool):
        if positions <= 0:
            raise ValueError(f"positions must be > 0, got {positions}")
        pos = np.arange(int(positions))
    else:
        pos = _float(positions, "positions", (1,))
        if np.any(pos < 0) or np.any(pos != np.round(pos)):
            raise ValueError("positions must be non-negative integers")
        pos = np.sort(pos.astype(np.int64))
    if not isinstance(floor_scale, (int, np.integer)) or floor_scale <= 0 or attn_scale < 0:
        raise ValueError(f"need floor_scale > 0 (int) and attn_scale >= 0, got {floor_scale!r}, {attn_scale!r}")
    s = temperature_scale(torch.as_tensor(pos), int(floor_scale), float(attn_scale)).numpy()
    if log_x is None:
        log_x = pos.max() >= 100 * floor_scale
    x = pos + 1 if log_x else pos
    fig = VizFigure(figsize=(6.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, s, drawstyle="steps-post", color=NOPE_COLOR, lw=1.8, label="NoPE query scale")
    ax.axhline(1.0, color="0.5", lw=1, ls=":", label="1 (no tuning; RoPE layers)")
    first = floor_scale - 1  # first position whose scale exceeds 1
    if pos.min() <= first <= pos.max():
        ax.axvline(first + 1 if log_x else first, color="black", lw=1, ls="--",
                   label=f"p = floor_scale − 1 = {first}: first scaled query")
    if log_x:
        ax.set_xscale("log")
        ax.set_xlabel("position p + 1 (log scale)")
    else:
        ax.set_xlabel("position p")
    ax.set_ylabel("query scale")
    ax.set_title(title or f"NoPE temperature tuning: 1 + {attn_scale:g}·ln(⌊(p+1)/{floor_scale}⌋ + 1)",
                 parse_math=False)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------------- 4. training
def _curve(name: str, c) -> tuple[np.ndarray, np.ndarray]:
    """A curve is values [N] (x = 0 … N-1) or (steps [N], values [N])."""
    if isinstance(c, tuple) and len(c) == 2 and all(np.ndim(_np(v, name)) == 1 for v in c):
        x, y = _float(c[0], f"curves[{name!r}] steps", (1,)), _float(c[1], f"curves[{name!r}] values", (1,))
        if len(x) != len(y):
            raise ValueError(f"curves[{name!r}]: {len(x)} steps for {len(y)} values")
        return x, y
    y = _float(c, f"curves[{name!r}]", (1,))
    return np.arange(len(y)), y


def loss_curves(curves: Mapping[str, object], title: str | None = None, ylabel: str = "loss", log_y: bool = False,
                xlabel: str = "step", smooth: int | None = None) -> Figure:
    """One line per named run. curves: {name: values} or {name: (steps, values)}, e.g.
    {"train": hist.train_loss, "val": (hist.eval_steps, hist.val_loss)}. smooth=n draws each curve's running mean
    over n points on top of the faint raw curve (for noisy per-step training losses)."""
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict {name: values or (steps, values)}")
    if smooth is not None and (not isinstance(smooth, int) or smooth < 1):
        raise ValueError(f"smooth must be a positive int or None, got {smooth!r}")
    parsed = {str(k): _curve(str(k), v) for k, v in curves.items()}
    if log_y and any(np.nanmin(y) <= 0 for _, y in parsed.values()):
        raise ValueError("log_y needs positive values")
    fig = VizFigure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = colormaps["tab10"].colors
    for i, (name, (x, y)) in enumerate(parsed.items()):
        color = colors[i % 10]
        marker = "o" if len(y) <= 30 else None
        if smooth and smooth > 1 and len(y) >= smooth:
            ax.plot(x, y, color=color, alpha=0.25, lw=1)
            ys = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            ax.plot(x[smooth - 1:], ys, color=color, lw=1.8, label=f"{name} (mean of {smooth})")
        else:
            ax.plot(x, y, color=color, lw=1.8, marker=marker, ms=3.5, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return fig
