"""Interactive explorers for a minillama4 model in a plain JupyterLab: ipywidgets, with every picture rendered in the
kernel (matplotlib Figure → PNG → an ipywidgets Image), so they need no JupyterLab extension and run under nbval.

    RoutingExplorer(models, tokenizer)    type or pick a text: each token in the colour of its top-1 expert in the
                                          chosen MoE layer (layer slider), that text's expert load, and the router's
                                          σ scores on hover and in a table; pass {"early": m0, "late": m1} to compare
                                          checkpoints side by side
    AttentionExplorer(model, tokenizer)   layer / head / query sliders: the attention map with the causal structure
                                          and the chunk boundaries marked, the layer labelled RoPE or NoPE, where the
                                          chosen query token looks, and the NoPE query temperature against position
    TrainingDashboard(total_steps)        progress bar, and loss / expert-load curves redrawn at every evaluation of
                                          train(..., on_step=dash.on_step, on_eval=dash.on_eval)

An explorer displays itself when it is the value of a notebook cell. Its controls are plain attributes, so a test (or
a cell) can drive it without a browser: `ex.layer.value = 2` redraws `ex.image.value` (PNG bytes); `ex.figure()`
returns the current picture as a Figure (static output that reads without running the notebook).

Any minillama4 model works, including one from `from_pretrained`; the tokenizer needs `encode(text) -> list[int]` and
`token_str(id)` or `decode([id])` (default: the course tokenizer, for the toy models). Bad arguments raise ValueError;
a text typed into the box that cannot be used (empty, ids outside the vocabulary) is reported in the status line.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass

import ipywidgets as w
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import PowerNorm, to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..attention import attention_mask, temperature_scale
from ..model import Llama4
from .viz import (CHUNK_LINE, MONO, VizFigure, _text_color, expert_color, figure_to_png, routing_load,
                  show_token)

# texts to pick from: one per corpus domain, and one that runs through all three
EXAMPLE_TEXTS = {
    "docs · math · code": ("The return statement leaves the current function call.\n417 + 38 = 455\n92 - 17 = 75\n"
                           "def get_size(data, key):\n    return data + key\n"),
    "docs": ("A class definition is an executable statement. The inheritance list usually gives a list of base "
             "classes, so each item in the list should evaluate to a class object which allows subclassing."),
    "math": "417 + 38 = 455\n92 - 17 = 75\n6 * 13 = 78\n250 + 250 = 500\n904 - 321 = 583\n",
    "code": ("def get_total(items, key):\n    total = 0\n    for x in items:\n        total += x * key\n"
             "    return total\n"),
    # about 150 tokens of the course tokenizer: crosses the toy models' 64-token chunk boundaries twice
    "long (crosses chunk boundaries)": (
        "The return statement leaves the current function call with the expression list (or None) as return value. "
        "When return passes control out of a try statement with a finally clause, that finally clause is executed "
        "before really leaving the function.\n417 + 38 = 455\n92 - 17 = 75\n6 * 13 = 78\n"
        "def get_count(items, key):\n    count = 0\n    for x in items:\n        count += x * key\n    return count\n"
        "def get_left(left, right):\n    if left > right:\n        return left\n    return right\n"),
}
ATTN_CMAP = colormaps["viridis"].with_extremes(bad="#f2f2f2")  # masked (causal / other chunk) = light grey
ROPE_COLOR, NOPE_COLOR = "#1f4e8c", "#b35900"  # as in viz.attention_maps


# --------------------------------------------------------------------------------------------------- shared pieces
def _check_model(model, name: str) -> Llama4:
    if not isinstance(model, Llama4):
        raise ValueError(f"{name} must be a minillama4 Llama4 model, got {type(model).__name__}")
    return model


def _check_tokenizer(tokenizer):
    if tokenizer is None:
        from .data import course_tokenizer
        return course_tokenizer()
    if not callable(getattr(tokenizer, "encode", None)) or not (
            callable(getattr(tokenizer, "token_str", None)) or callable(getattr(tokenizer, "decode", None))):
        raise ValueError("tokenizer needs encode(text) -> list[int] and token_str(id) or decode([id]), got "
                         f"{type(tokenizer).__name__}")
    return tokenizer


def _token_strings(tokenizer, ids: list[int]) -> list[str]:
    if callable(getattr(tokenizer, "token_str", None)):
        return [tokenizer.token_str(i) for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _check_texts(texts, text) -> tuple[dict[str, str], str]:
    texts = dict(EXAMPLE_TEXTS if texts is None else texts)
    if not texts or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in texts.items()):
        raise ValueError("texts must be a non-empty dict {name: non-empty text}")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    return texts, next(iter(texts.values())) if text is None else text


def _name_of(texts: dict[str, str], text: str) -> str | None:
    """The drop-down entry showing `text`, if it is one of the examples."""
    return next((k for k, v in texts.items() if v == text), None)


def _encode(tokenizer, text: str, models: Mapping[str, Llama4], bos: bool, max_tokens: int):
    """text → (ids [1, T] with the model's BOS first, token strings, note). Raises ValueError for unusable text."""
    if not text.strip():
        raise ValueError("the text is empty: type or pick a text")
    ids = [int(i) for i in tokenizer.encode(text)]
    first = next(iter(models.values())).config.bos_token_id
    if bos and first is not None and (not ids or ids[0] != first):
        ids = [int(first)] + ids  # documents start with <|begin_of_text|>, as in training
    note = ""
    if len(ids) > max_tokens:
        note = f" (the first {max_tokens} of {len(ids)} tokens)"
        ids = ids[:max_tokens]
    for name, m in models.items():
        bad = [i for i in ids if not 0 <= i < m.config.vocab_size]
        if bad:
            raise ValueError(f"the tokenizer gives id {bad[0]}, outside the vocabulary of model {name!r} "
                             f"(vocab_size={m.config.vocab_size}): pass the tokenizer the model was trained with")
        if len(ids) > m.config.max_position_embeddings:
            raise ValueError(f"{len(ids)} tokens exceed max_position_embeddings of model {name!r}")
    return torch.tensor([ids]), _token_strings(tokenizer, ids), note


def _status(msg: str, error: bool = False) -> str:
    color = "#b00020" if error else "#555"
    return f'<span style="color:{color}; font-size: 0.9em">{html.escape(msg)}</span>'


def _css(rgba) -> str:
    r, g, b, a = rgba
    return f"rgba({int(255 * r)}, {int(255 * g)}, {int(255 * b)}, {a:.3f})"


def _token_span(label: str, background, border: str, tip: str, extra: str = "") -> str:
    fg = _text_color(background)
    return (f'<span title="{html.escape(tip)}" style="background:{_css(background)}; color:{fg}; '
            f'border-bottom:3px solid {border}; font-family:monospace; white-space:pre; padding:1px 2px; '
            f'margin:1px; display:inline-block; line-height:1.5; {extra}">{html.escape(label)}</span>')


def _layout_rows(labels: list[str], tokens: list[str], row_chars: int) -> list[list[tuple[int, float, float]]]:
    """Wrap token boxes into rows of about row_chars characters; a token holding a newline ends its row.
    Each row: [(token index, x, width)] in character units."""
    rows, row, x = [], [], 0.0
    for i, lab in enumerate(labels):
        wd = len(lab) + 1.0
        if row and x + wd > row_chars:
            rows.append(row)
            row, x = [], 0.0
        row.append((i, x, wd))
        x += wd + 0.4
        if "\n" in tokens[i]:
            rows.append(row)
            row, x = [], 0.0
    if row:
        rows.append(row)
    return rows


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


class _Explorer:
    """Displays its widget when it is the value of a notebook cell; renders its figure into an Image widget."""

    widget: w.Widget
    image: w.Image

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def figure(self):  # each explorer draws its own picture
        raise NotImplementedError(f"{type(self).__name__} must define figure()")

    def _render(self) -> None:
        self.image.value = figure_to_png(self.figure())


# --------------------------------------------------------------------------------------------------- routing
@dataclass
class RoutedText:
    """What one model's routers did with one text (the BOS token left out). L = MoE layers, T tokens, k, E experts."""
    expert_LTK: np.ndarray  # chosen experts, best first
    score_LTK: np.ndarray  # their router scores σ(logit)
    sigma_LTE: np.ndarray  # σ(logit) of every expert (what the router would score each one)
    load_LE: np.ndarray  # share of the text's (token, slot) assignments each expert received


@torch.no_grad()
def route_text(model: Llama4, ids_1T: torch.Tensor, skip: int = 0) -> RoutedText:
    """Run the model on one sequence [1, T] and collect its routing, leaving out the first `skip` tokens."""
    if ids_1T.dim() != 2 or ids_1T.shape[0] != 1 or ids_1T.shape[1] <= skip:
        raise ValueError(f"ids_1T must be [1, T] with T > skip={skip}, got shape {tuple(ids_1T.shape)}")
    _, routing = model(ids_1T.to(model.device), return_routing=True)
    if not routing:
        raise ValueError("the model has no MoE layer: nothing is routed")
    routing = [type(r)(*(t[skip:] for t in r)) for r in routing]  # every field is [T, …]
    return RoutedText(
        expert_LTK=np.stack([r.indices.cpu().numpy() for r in routing]),
        score_LTK=np.stack([r.scores.float().cpu().numpy() for r in routing]),
        sigma_LTE=np.stack([torch.sigmoid(r.logits.float()).cpu().numpy() for r in routing]),
        load_LE=routing_load(routing),
    )


class RoutingExplorer(_Explorer):
    """Which expert each token goes to, per MoE layer, for one or several models (checkpoints) of one architecture.

    models: a Llama4, or {name: Llama4} (up to 4, e.g. {"random init": m0, "trained": m1}), all with the same MoE
    layers. tokenizer: see the module docstring. texts: {name: text} offered in the drop-down (default
    EXAMPLE_TEXTS); text: the first text shown. bos: start the ids with the model's BOS token (not drawn).
    max_tokens: longer texts are cut (the status line says so)."""

    def __init__(self, models, tokenizer=None, texts: Mapping[str, str] | None = None, text: str | None = None,
                 bos: bool = True, max_tokens: int = 96):
        if isinstance(models, Llama4):
            models = {"model": models}
        if not isinstance(models, Mapping) or not 1 <= len(models) <= 4:
            raise ValueError("models must be a Llama4 or a dict {name: Llama4} of 1 to 4 models")
        self.models = {str(k): _check_model(m, f"models[{k!r}]") for k, m in models.items()}
        plans = {k: m.config.moe_layers for k, m in self.models.items()}
        first = next(iter(plans.values()))
        if not first:
            raise ValueError(f"model {next(iter(plans))!r} has no MoE layer: nothing is routed")
        if any(p != first for p in plans.values()):
            raise ValueError(f"the models must have the same MoE layers to be compared, got {plans}")
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"max_tokens must be an int >= 2, got {max_tokens!r}")
        self.tokenizer = _check_tokenizer(tokenizer)
        self.texts, text = _check_texts(texts, text)
        self.moe_layers, self.bos, self.max_tokens = list(first), bos, max_tokens
        self.tokens: list[str] = []
        self.routed: dict[str, RoutedText] = {}
        _encode(self.tokenizer, text, self.models, bos, max_tokens)  # bad arguments fail here, not in a callback

        self.example = w.Dropdown(options=list(self.texts), value=_name_of(self.texts, text), description="example",
                                  layout=w.Layout(width="22em"))
        self.text = w.Textarea(value=text, description="text", rows=3, continuous_update=False,
                               layout=w.Layout(width="95%"))
        self.layer = w.SelectionSlider(options=[(str(i), i) for i in self.moe_layers], value=self.moe_layers[0],
                                       description="layer", continuous_update=False)
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.tokens_html = w.HTML(layout=w.Layout(width="95%"))
        self.table_html = w.HTML(layout=w.Layout(max_height="22em", overflow="auto"))
        table = w.Accordion(children=[self.table_html], titles=("router scores σ of every expert, per token",))
        hover = w.HTML(_status("hover over a token for its router scores"))
        self.widget = w.VBox([w.HBox([self.example, self.layer]), self.text, self.status, self.image, hover,
                              self.tokens_html, table])
        self.example.observe(lambda ch: self.text.set_trait("value", self.texts[ch["new"]]) if ch["new"] else None,
                             names="value")
        self.text.observe(lambda _: self._update_text(), names="value")
        self.layer.observe(lambda _: self._update_layer(), names="value")
        self._update_text()

    def _update_text(self) -> None:
        try:
            ids, tokens, note = _encode(self.tokenizer, self.text.value, self.models, self.bos, self.max_tokens)
        except ValueError as e:
            self.status.value = _status(str(e), error=True)
            return
        bos_id = next(iter(self.models.values())).config.bos_token_id
        skip = int(self.bos and ids.shape[1] > 1 and ids[0, 0].item() == bos_id)  # BOS is routed, not drawn
        self.tokens = tokens[skip:]
        self.routed = {name: route_text(m, ids, skip) for name, m in self.models.items()}
        self.status.value = _status(f"{len(self.tokens)} tokens{note}")
        self._update_layer()

    def _update_layer(self) -> None:
        if not self.routed:
            return
        self._render()
        self.tokens_html.value = self._tokens_html()
        self.table_html.value = self._table_html()

    @property
    def _row(self) -> int:
        return self.moe_layers.index(self.layer.value)

    def figure(self):
        """The current picture: per model, the text with each token in its top-1 expert's colour (opacity = σ) and
        the expert load of this text in the chosen MoE layer."""
        if not self.routed:
            raise ValueError("no text has been routed yet")
        labels = [show_token(t) for t in self.tokens]
        row_chars = 96
        rows = _layout_rows(labels, self.tokens, row_chars)
        l, n = self._row, len(self.models)
        E_max = max(r.sigma_LTE.shape[-1] for r in self.routed.values())
        strip_h = 0.3 * len(rows) + 0.45
        fig = VizFigure(figsize=(12.5, n * strip_h + 0.8), layout="constrained")
        gs = fig.add_gridspec(n, 2, width_ratios=[5.0, 1.0])
        for m, (name, r) in enumerate(self.routed.items()):
            ax = fig.add_subplot(gs[m, 0])
            ax.set_xlim(0, row_chars)
            ax.set_ylim(len(rows), 0)
            ax.axis("off")
            for y, row in enumerate(rows):
                for i, x0, wd in row:
                    c = expert_color(r.expert_LTK[l, i, 0])
                    face = (*c[:3], 0.12 + 0.88 * float(r.score_LTK[l, i, 0]))
                    ax.add_patch(Rectangle((x0, y + 0.1), wd, 0.8, facecolor=face, edgecolor=c, lw=0.8))
                    ax.text(x0 + wd / 2, y + 0.5, labels[i], ha="center", va="center", fontsize=8, family=MONO,
                            color=_text_color(face), parse_math=False)
            ax.set_title(f"{name} · MoE layer {self.layer.value}: top-1 expert per token (opacity = router score σ)",
                         fontsize=10, loc="left")
            E = r.load_LE.shape[-1]
            bx = fig.add_subplot(gs[m, 1])
            bx.bar(range(E), r.load_LE[l], color=[expert_color(e) for e in range(E)], width=0.75)
            bx.axhline(1 / E, color="black", ls="--", lw=1)
            for e, v in enumerate(r.load_LE[l]):
                bx.text(e, v, f"{v:.0%}", ha="center", va="bottom", fontsize=7)
            bx.set_ylim(0, 1.05)
            bx.set_xticks(range(E) if E <= 16 else range(0, E, max(1, E // 8)))
            bx.tick_params(labelsize=7)
            bx.set_title("expert load (this text)", fontsize=9)
            bx.set_xlabel("expert", fontsize=8)
        handles = [Patch(facecolor=expert_color(e), label=f"expert {e}") for e in range(min(E_max, 20))]
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label="uniform load 1/E"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 11), frameon=False,
                   fontsize=8)
        return fig

    def _tokens_html(self) -> str:
        l, parts = self._row, []
        for name, r in self.routed.items():
            spans = []
            for i, tok in enumerate(self.tokens):
                e, s = int(r.expert_LTK[l, i, 0]), float(r.score_LTK[l, i, 0])
                c = expert_color(e)
                sig = ", ".join(f"e{j} {v:.2f}" for j, v in enumerate(r.sigma_LTE[l, i]))
                chosen = ", ".join(str(int(x)) for x in r.expert_LTK[l, i])
                tip = (f"token {i} {show_token(tok)!r} · layer {self.layer.value} · expert {chosen} "
                       f"(σ = {s:.3f}) · σ of each expert: {sig}")
                spans.append(_token_span(show_token(tok), (*c[:3], 0.12 + 0.88 * s), to_hex(c), tip))
                if "\n" in tok:
                    spans.append("<br>")
            parts.append(f"<div><b>{html.escape(name)}</b>: {''.join(spans)}</div>")
        return "".join(parts)

    def _table_html(self) -> str:
        l = self._row
        head = "<th>#</th><th>token</th>"
        for name, r in self.routed.items():
            E = r.sigma_LTE.shape[-1]
            head += f"<th>{html.escape(name)}: expert</th>" + "".join(f"<th>σ e{e}</th>" for e in range(E))
        rows = []
        for i, tok in enumerate(self.tokens):
            mono = "font-family:monospace; white-space:pre"
            cells = f"<td>{i}</td><td style='{mono}'>{html.escape(show_token(tok))}</td>"
            for r in self.routed.values():
                chosen = [int(x) for x in r.expert_LTK[l, i]]
                c = expert_color(chosen[0])
                cells += (f"<td style='background:{_css((*c[:3], 0.5))}'>{', '.join(map(str, chosen))}</td>" +
                          "".join(f"<td>{'<b>' if e in chosen else ''}{v:.3f}{'</b>' if e in chosen else ''}</td>"
                                  for e, v in enumerate(r.sigma_LTE[l, i])))
            rows.append(f"<tr>{cells}</tr>")
        style = "border-collapse:collapse; font-size:0.85em; text-align:right"
        return f"<table style='{style}'><tr>{head}</tr>{''.join(rows)}</table>"


# --------------------------------------------------------------------------------------------------- attention
class AttentionExplorer(_Explorer):
    """Where each query looks, per layer and head, on one text.

    Layer, head and query sliders; the query slider picks a token (position p) whose attention over the keys is drawn
    as bars and as highlighted tokens. The map marks what the mask forbids (grey: future keys, and for chunked RoPE
    layers keys in another chunk), the diagonal s = p and the chunk boundaries (red). The third panel is the NoPE
    query temperature 1 + β·ln(⌊(p+1)/F⌋ + 1) against the position, with the chosen query marked on NoPE
    layers."""

    def __init__(self, model: Llama4, tokenizer=None, texts: Mapping[str, str] | None = None, text: str | None = None,
                 bos: bool = True, max_tokens: int = 192, gamma: float = 0.5):
        self.model = _check_model(model, "model")
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"max_tokens must be an int >= 2, got {max_tokens!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.tokenizer = _check_tokenizer(tokenizer)
        texts = EXAMPLE_TEXTS if texts is None else texts
        self.texts, text = _check_texts(texts, text if text is not None or texts is not EXAMPLE_TEXTS else
                                        EXAMPLE_TEXTS["long (crosses chunk boundaries)"])
        self.bos, self.max_tokens, self.gamma = bos, max_tokens, gamma
        self.tokens: list[str] = []
        self.weights_LHTT: np.ndarray | None = None
        _encode(self.tokenizer, text, {"model": model}, bos, max_tokens)  # bad arguments fail here
        c = model.config

        self.example = w.Dropdown(options=list(self.texts), value=_name_of(self.texts, text), description="example",
                                  layout=w.Layout(width="22em"))
        self.text = w.Textarea(value=text, description="text", rows=3, continuous_update=False,
                               layout=w.Layout(width="95%"))
        self.layer = w.IntSlider(0, 0, c.num_hidden_layers - 1, description="layer", continuous_update=False)
        self.head = w.IntSlider(0, 0, c.num_attention_heads - 1, description="head", continuous_update=False)
        self.query = w.IntSlider(0, 0, 1, description="query token", continuous_update=False)
        self.kind = w.HTML()
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.looks_html = w.HTML(layout=w.Layout(width="95%"))
        self.widget = w.VBox([w.HBox([self.example, self.layer, self.kind]), self.text,
                              w.HBox([self.head, self.query]), self.status, self.image,
                              w.HTML(_status("where the query token looks (hover for the weight):")),
                              self.looks_html])
        self.example.observe(lambda ch: self.text.set_trait("value", self.texts[ch["new"]]) if ch["new"] else None,
                             names="value")
        self.text.observe(lambda _: self._update_text(), names="value")
        self._quiet = False
        for s in (self.layer, self.head, self.query):
            s.observe(lambda _: None if self._quiet else self._update_view(), names="value")
        self._update_text()

    def layer_kind(self, layer: int) -> str:
        c = self.model.config
        if c.uses_rope(layer):
            return f"RoPE, chunked (C = {c.attention_chunk_size})" if c.is_chunked(layer) else "RoPE, global"
        return "NoPE, global" + (", temperature-tuned queries" if c.attn_temperature_tuning else "")

    @torch.no_grad()
    def _update_text(self) -> None:
        try:
            ids, tokens, note = _encode(self.tokenizer, self.text.value, {"model": self.model}, self.bos,
                                        self.max_tokens)
        except ValueError as e:
            self.status.value = _status(str(e), error=True)
            return
        _, attn = self.model(ids.to(self.model.device), return_attention=True)
        self.weights_LHTT = np.stack([a[0].float().cpu().numpy() for a in attn])
        self.tokens = tokens
        T = len(tokens)
        self._quiet = True  # one redraw below, not one more for the query slider
        try:
            self.query.max = T - 1
            self.query.value = T - 1
        finally:
            self._quiet = False
        self.status.value = _status(f"{T} tokens{note} (position 0 is <|begin_of_text|> when bos=True)")
        self._update_view()

    def _update_view(self) -> None:
        if self.weights_LHTT is None:
            return
        l = self.layer.value
        color = ROPE_COLOR if self.model.config.uses_rope(l) else NOPE_COLOR
        self.kind.value = f'<b style="color:{color}">layer {l}: {html.escape(self.layer_kind(l))}</b>'
        self._render()
        self.looks_html.value = self._looks_html()

    def _mask_TT(self, layer: int) -> np.ndarray:
        c, pos = self.model.config, torch.arange(len(self.tokens))
        return attention_mask(pos, pos, c.attention_chunk_size if c.is_chunked(layer) else None).numpy()

    def figure(self):
        """The current picture: the attention map of (layer, head), the chosen query's weights over the keys, and
        the NoPE query temperature against position."""
        if self.weights_LHTT is None:
            raise ValueError("no text has been run yet")
        c = self.model.config
        l, h, q = self.layer.value, self.head.value, self.query.value
        W_TT, mask_TT, T = self.weights_LHTT[l, h], self._mask_TT(l), len(self.tokens)
        rope, chunked = c.uses_rope(l), c.is_chunked(l)
        color = ROPE_COLOR if rope else NOPE_COLOR
        fig = VizFigure(figsize=(13.0, 6.0), layout="constrained")
        gs = fig.add_gridspec(2, 2, width_ratios=[1.0, 1.25], height_ratios=[1.0, 1.0])
        ax = fig.add_subplot(gs[:, 0])
        im = ax.imshow(np.ma.masked_array(W_TT, ~mask_TT), cmap=ATTN_CMAP, norm=PowerNorm(self.gamma, 0.0, 1.0),
                       interpolation="nearest")
        ax.plot([-0.5, T - 0.5], [-0.5, T - 0.5], color="white", lw=0.8, ls=":")  # s = p: the causal edge
        if chunked:
            for b in range(c.attention_chunk_size, T, c.attention_chunk_size):
                ax.axvline(b - 0.5, **CHUNK_LINE)
                ax.axhline(b - 0.5, **CHUNK_LINE)
        ax.add_patch(Rectangle((-0.5, q - 0.5), T, 1.0, fill=False, edgecolor="#e377c2", lw=1.5))
        ax.set_xlabel("key position s")
        ax.set_ylabel("query position p")
        kv = h // (c.num_attention_heads // c.num_key_value_heads)  # GQA: the kv head this query head reads
        ax.set_title(f"layer {l} · {self.layer_kind(l)} · head {h} (kv head {kv})",
                     fontsize=10, color=color)
        cb = fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02)
        cb.set_label(f"attention weight (colour ∝ w^{self.gamma:g}; grey = masked)", fontsize=8)
        masked = "masked (future / other chunk)" if chunked else "masked (future)"
        handles = [Patch(facecolor="#f2f2f2", edgecolor="0.6", label=masked),
                   Patch(facecolor="none", edgecolor="#e377c2", label=f"query {q}")]
        if chunked:
            handles.insert(1, Line2D([], [], **CHUNK_LINE, label="chunk boundary"))
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)

        bx = fig.add_subplot(gs[0, 1])
        wq = np.where(mask_TT[q], W_TT[q], 0.0)
        bx.stairs(wq, np.arange(T + 1) - 0.5, fill=True, color=color)  # one bar per key, drawn as one artist
        for a, b in _runs(~mask_TT[q]):  # masked keys: later positions, and earlier chunks on chunked layers
            bx.axvspan(a - 0.5, b - 0.5, color="#f2f2f2", lw=0)
        for s in np.argsort(-wq)[:3]:
            if wq[s] > 0:
                bx.annotate(show_token(self.tokens[s]), (s, wq[s]), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8, family=MONO, parse_math=False)
        bx.set_xlim(-0.5, T - 0.5)
        bx.set_ylim(0, max(0.05, float(wq.max())) * 1.25)
        bx.set_xlabel("key position s (grey: masked for this query)")
        bx.set_ylabel("weight")
        bx.set_title(f"query {q} {show_token(self.tokens[q])!r} looks at (head {h})", fontsize=10, parse_math=False)

        tx = fig.add_subplot(gs[1, 1])
        F, beta = c.floor_scale, c.attn_scale
        P = max(T, 4 * F)
        pos = np.arange(P)
        curve = temperature_scale(torch.as_tensor(pos), F, beta).numpy() if c.attn_temperature_tuning else np.ones(P)
        tx.plot(pos, curve, drawstyle="steps-post", color=NOPE_COLOR, lw=1.6, label="NoPE layers")
        tx.axhline(1.0, color=ROPE_COLOR, lw=1.2, ls=":", label="RoPE layers (no scaling)")
        tx.axvspan(0, T - 1, color="0.85", alpha=0.6, lw=0, label="this text")
        mine = float(curve[q]) if not rope else 1.0
        tx.plot([q], [mine], "o", color="#e377c2", ms=6, label=f"query {q} in layer {l}: × {mine:.3f}")
        tx.set_xlabel("query position p")
        tx.set_ylabel("query scale")
        if c.attn_temperature_tuning:
            tx.set_title(f"query temperature 1 + {beta:g}·ln(⌊(p+1)/{F}⌋ + 1)", fontsize=10, parse_math=False)
        else:
            tx.set_title("temperature tuning is off in this model: every query scale is 1", fontsize=10)
        tx.legend(fontsize=7, loc="upper left")
        tx.grid(alpha=0.3)
        return fig

    def _looks_html(self) -> str:
        l, h, q = self.layer.value, self.head.value, self.query.value
        W, mask = self.weights_LHTT[l, h, q], self._mask_TT(l)[q]
        top = max(float(W[mask].max()), 1e-9)
        spans = []
        for s, tok in enumerate(self.tokens):
            lab = show_token(tok)
            if s == q:
                spans.append(_token_span(lab, (0.89, 0.47, 0.76, 1.0), "#e377c2", f"query {q}: weight on itself "
                                         f"{W[s]:.3f}", "font-weight:bold"))
            elif mask[s]:
                a = (W[s] / top) ** 0.5
                spans.append(_token_span(lab, (1.0, 0.6, 0.0, float(a)), "#ff9900", f"key {s}: weight {W[s]:.3f}"))
            else:
                spans.append(_token_span(lab, (1, 1, 1, 0), "#dddddd", f"key {s}: masked for query {q}",
                                         "color:#aaaaaa"))
            if "\n" in tok:
                spans.append("<br>")
        return "".join(spans)


# --------------------------------------------------------------------------------------------------- training
class TrainingDashboard(_Explorer):
    """A live view of a training run: a progress bar (every step) and, at each evaluation, the loss curves and the
    expert load of one MoE layer over training (the layer slider redraws it, also after the run).

        dash = TrainingDashboard(cfg.steps, title="mini-Scout")
        dash                                   # display it (last line of a cell)
        hist = train(model, train_ids, val_ids, cfg, progress=False, on_step=dash.on_step, on_eval=dash.on_eval)

    min_interval: seconds between two redraws of the picture (evaluations in between only update the numbers)."""

    def __init__(self, total_steps: int, title: str = "training", smooth: int = 10, min_interval: float = 0.0):
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not isinstance(smooth, int) or smooth < 1:
            raise ValueError(f"smooth must be a positive int, got {smooth!r}")
        self.total_steps, self.title, self.smooth, self.min_interval = total_steps, title, smooth, min_interval
        self.history = None
        self.redraws = 0
        self._t0 = self._last_draw = None
        self._done, self._rate = 0, 0.0
        self.progress = w.IntProgress(0, 0, total_steps, description=title[:20], bar_style="info")
        self.label = w.HTML(_status(f"0 / {total_steps} steps"))
        self.layer = w.IntSlider(0, 0, 0, description="MoE layer", continuous_update=False, disabled=True)
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.widget = w.VBox([w.HBox([self.progress, self.label]), self.layer, self.image])
        self.layer.observe(lambda _: self._render() if self.history else None, names="value")

    def on_step(self, step: int, routing=None) -> None:
        """train(..., on_step=...): advance the progress bar (step is 0-based)."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        self._done = step + 1
        self.progress.value = min(self._done, self.total_steps)
        self._rate = self._done / max(now - self._t0, 1e-9)
        self._update_label()

    def _update_label(self) -> None:
        extra = ""
        if self.history and self.history.val_loss:
            extra = f" · val loss {self.history.val_loss[-1]:.3f} at step {self.history.eval_steps[-1]}"
        self.label.value = _status(f"{self._done} / {self.total_steps} steps · {self._rate:.1f} steps/s{extra}")

    def on_eval(self, step: int, history) -> None:
        """train(..., on_eval=...): record the history and redraw the curves."""
        self.history = history
        self._done = max(self._done, step)
        self._update_label()
        L = len(history.expert_load[-1]) if history.expert_load and history.expert_load[-1] else 0
        if L:
            self.layer.max, self.layer.disabled = L - 1, False
        now = time.perf_counter()
        last = step >= self.total_steps
        if last:
            self.progress.bar_style = "success"
        if last or self._last_draw is None or now - self._last_draw >= self.min_interval:
            self._render()
            self._last_draw = now

    def _render(self) -> None:
        super()._render()
        self.redraws += 1

    def figure(self):
        """Loss curves (train per step, smoothed; validation at the evaluations) and the chosen MoE layer's expert
        load at each evaluation (one line per expert, uniform 1/E dashed)."""
        hist = self.history
        if hist is None or not hist.eval_steps:
            raise ValueError("no evaluation yet: pass on_eval=dash.on_eval to train(...)")
        fig = VizFigure(figsize=(12.0, 3.6), layout="constrained")
        ax, bx = fig.subplots(1, 2)
        colors = colormaps["tab10"].colors
        x, y = np.asarray(hist.steps), np.asarray(hist.train_loss)
        ax.plot(x, y, color=colors[0], alpha=0.3, lw=0.8)
        n = min(self.smooth, len(y))
        if n > 1:
            ax.plot(x[n - 1:], np.convolve(y, np.ones(n) / n, mode="valid"), color=colors[0], lw=1.6,
                    label=f"train (mean of {n} steps)")
        else:
            ax.plot([], [], color=colors[0], label="train")
        ax.plot(hist.eval_steps, hist.val_loss, "o-", color=colors[1], ms=4, label="validation")
        ax.set_xlim(0, self.total_steps)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.set_title(f"{self.title}: loss at step {hist.eval_steps[-1]} of {self.total_steps}", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
        load = [ev[self.layer.value] for ev in hist.expert_load if ev]
        if load:
            load_SE = np.asarray(load)
            E = load_SE.shape[1]
            for e in range(E):
                bx.plot(hist.eval_steps[-len(load):], load_SE[:, e], "o-", ms=3, color=expert_color(e),
                        label=f"expert {e}")
            bx.axhline(1 / E, color="black", ls="--", lw=1, label="uniform 1/E")
            bx.set_ylim(0, max(2 / E, float(load_SE.max()) * 1.1))
            bx.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
        else:
            bx.text(0.5, 0.5, "no MoE layer: no expert load", ha="center", va="center", transform=bx.transAxes)
        bx.set_xlim(0, self.total_steps)
        bx.set_xlabel("step")
        bx.set_ylabel("share of tokens")
        bx.set_title(f"expert load · MoE layer {self.layer.value} (validation tokens)", fontsize=10)
        bx.grid(alpha=0.3)
        return fig
