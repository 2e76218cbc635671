"""minillama4.course.viz: every picture on synthetic input and on a tiny random model's routing and attention weights.

Checks what a picture *shows*: image data equals the input, boxes have their expert's colour, chunk boundaries sit
between positions C-1 and C, panels name their layer kind; and that bad input raises a ValueError naming it."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import minillama4
from minillama4.course import viz
from minillama4.attention import attention_mask, temperature_scale
from minillama4.rope import rope_angles

PNG = b"\x89PNG\r\n\x1a\n"
CHUNK = 8
T = 20  # spans three chunks of 8


def drawn(fig: Figure) -> Figure:
    """Lay the figure out and draw it (catches errors that only appear at draw time), without rendering pixels."""
    assert isinstance(fig, Figure)
    fig.draw_without_rendering()
    return fig


def panels(fig: Figure):
    """The axes that hold the picture (not colour bars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def vlines(ax) -> list[float]:
    """x positions of the axvline()s of an axes (lines spanning the full height)."""
    return sorted(float(l.get_xdata()[0]) for l in ax.lines
                  if list(l.get_ydata()) == [0, 1] and l.get_xdata()[0] == l.get_xdata()[1])


def hlines(ax) -> list[float]:
    """y positions of the axhline()s of an axes (lines spanning the full width)."""
    return sorted(float(l.get_ydata()[0]) for l in ax.lines
                  if list(l.get_xdata()) == [0, 1] and l.get_ydata()[0] == l.get_ydata()[1])


@pytest.fixture(scope="module")
def toy():
    """A tiny random Llama 4 (layers 0-2 RoPE chunked by 8, layer 3 NoPE), one 20-token sequence: its routing and
    the attention weights [B, H, T, T] of every layer."""
    torch.manual_seed(0)
    cfg = minillama4.Llama4Config.preset("toy").replace(attention_chunk_size=CHUNK, floor_scale=4)
    model = minillama4.Llama4(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, T))
    pos = torch.arange(T)
    with torch.no_grad():
        _, routing = model(ids, return_routing=True)
        freqs = rope_angles(pos, model.inv_freq)
        x = model.embed_tokens(ids)
        weights = [layer.self_attn(layer.input_layernorm(x), freqs, pos, return_weights=True)[1]
                   for layer in model.layers]
    tokens = [f" t{i}" if i % 3 else f"t{i}\n" for i in ids[0].tolist()]
    return dict(cfg=cfg, model=model, ids=ids, routing=routing, weights=weights, tokens=tokens, pos=pos)


# ------------------------------------------------------------------------------------------------- basics
def test_figure_to_png_and_notebook_repr():
    fig = viz.loss_curves({"a": [3.0, 2.0, 1.5]})
    png = viz.figure_to_png(fig)
    assert isinstance(png, bytes) and png.startswith(PNG) and len(png) > 1000
    assert fig._repr_png_().startswith(PNG)  # a notebook cell returning the figure shows it
    with pytest.raises(ValueError, match="Figure"):
        viz.figure_to_png("not a figure")


def test_no_pyplot():
    code = ("import sys, numpy as np; from minillama4.course import viz; "
            "viz.figure_to_png(viz.attention_mask(np.tril(np.ones((4, 4), bool)), chunk_size=2)); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'viz imported pyplot'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_expert_colors_are_stable_and_distinct():
    colors = [viz.expert_color(e) for e in range(64)]
    assert len(set(colors)) == 64
    assert viz.expert_color(3) == to_rgba("tab:red")  # tab10 first, whatever the number of experts
    for E in (4, 16, 128):
        cmap, norm = viz.expert_colormap(E)
        assert [tuple(cmap(norm(e))) for e in range(E)] == [viz.expert_color(e) for e in range(E)]
    with pytest.raises(ValueError):
        viz.expert_color(-1)


def test_show_token():
    assert viz.show_token(" a\tb\n") == "␣a⇥b↵"
    assert viz.show_token("") == "∅"
    assert viz.show_token("\x00") == "\\x00"


# ------------------------------------------------------------------------------------------------- tokens
def test_token_experts_synthetic():
    tokens = ["Hello", " world", "\n", "$x$", " ok"]
    ids = torch.tensor([[0, 1], [2, 0], [1, 3], [3, 2], [0, 1]])  # [T, k]: column 0 is drawn
    scores = np.array([[0.9, 0.1], [0.2, 0.1], [0.5, 0.4], [1.0, 0.0], [0.0, 0.0]])
    fig = drawn(viz.token_experts(tokens, ids, scores, n_experts=4, title="demo"))
    (ax,) = fig.axes
    assert len(ax.patches) == 5
    for p, e in zip(ax.patches, [0, 2, 1, 3, 0]):
        assert p.get_facecolor()[:3] == pytest.approx(viz.expert_color(e)[:3])
        assert p.get_edgecolor() == pytest.approx(viz.expert_color(e))
    alphas = [p.get_facecolor()[3] for p in ax.patches]
    assert alphas[3] > alphas[0] > alphas[2] > alphas[1] > alphas[4]  # opacity follows the score
    assert [t.get_text() for t in ax.texts] == ["Hello", "␣world", "↵", "$x$", "␣ok"]
    assert fig._suptitle.get_text() == "demo"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [f"expert {e}" for e in range(4)]
    rows = [p.get_y() for p in ax.patches]
    assert rows[3] > rows[2] and rows[0] == rows[1] == rows[2]  # the newline token ends its row


def test_token_experts_wraps_rows():
    fig = drawn(viz.token_experts(list("abcdefg"), [0, 1, 2, 3, 0, 1, 2], max_per_row=3))
    ys = [p.get_y() for p in fig.axes[0].patches]
    assert len(set(ys)) == 3 and ys[:3] == [ys[0]] * 3
    assert "4 experts" in fig._suptitle.get_text()  # n_experts defaults to max id + 1


def test_token_experts_real(toy):
    ids_LT, scores_LT = viz.routing_top1(toy["routing"])
    assert ids_LT.shape == scores_LT.shape == (4, T)
    fig = drawn(viz.token_experts(toy["tokens"], ids_LT[1], scores_LT[1], n_experts=toy["cfg"].num_local_experts))
    ax = fig.axes[0]
    want = toy["routing"][1].indices[:, 0].tolist()
    assert [p.get_edgecolor() for p in ax.patches] == [viz.expert_color(e) for e in want]
    assert all("␣" in t.get_text() or "↵" in t.get_text() for t in ax.texts)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tokens=["a", "b"], expert_ids=[0, 1, 2]), "len\\(tokens\\) = 2"),
    (dict(tokens=["a", "b"], expert_ids=[0, 1], scores=[0.5]), "scores has 1 entries"),
    (dict(tokens=["a", "b"], expert_ids=[0, 1], scores=[0.5, 1.5]), "\\[0, 1\\]"),
    (dict(tokens=["a", "b"], expert_ids=[0, 4], n_experts=4), "n_experts=4"),
    (dict(tokens=["a", "b"], expert_ids=[0, -1]), "negative"),
    (dict(tokens="ab", expert_ids=[0, 1]), "list of token strings"),
    (dict(tokens=["a", "b"], expert_ids=[0.5, 1]), "integer"),
    (dict(tokens=["a", "b"], expert_ids=np.zeros((2, 1, 1), int)), "\\[T\\] or \\[T, k\\]"),
])
def test_token_experts_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.token_experts(**kwargs)


def test_token_experts_by_layer(toy):
    ids_LT, _ = viz.routing_top1(toy["routing"])
    fig = drawn(viz.token_experts_by_layer(toy["tokens"], torch.as_tensor(ids_LT), 4, layer_ids=[0, 1, 2, 3]))
    assert len(fig.axes) == 2  # the grid and its colour bar
    (ax,) = panels(fig)
    np.testing.assert_array_equal(ax.images[0].get_array(), ids_LT)
    assert [t.get_text() for t in ax.get_xticklabels()] == [viz.show_token(t) for t in toy["tokens"]]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"layer {i}" for i in range(4)]
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    assert [tuple(cmap(norm(e))) for e in range(4)] == [viz.expert_color(e) for e in range(4)]

    # [L, T, k] keeps the top-1 column; layer_ids label the rows (e.g. Maverick's odd MoE layers)
    ids_LTK = np.stack([ids_LT, (ids_LT + 1) % 4], -1)
    fig = drawn(viz.token_experts_by_layer(toy["tokens"], ids_LTK, 4, layer_ids=[1, 3, 5, 7]))
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), ids_LT)
    assert fig.axes[0].get_yticklabels()[-1].get_text() == "layer 7"
    with pytest.raises(ValueError, match="T = len\\(tokens\\)"):
        viz.token_experts_by_layer(toy["tokens"][:-1], ids_LT, 4)
    with pytest.raises(ValueError, match="layer_ids has 2 entries"):
        viz.token_experts_by_layer(toy["tokens"], ids_LT, 4, layer_ids=[0, 1])
    with pytest.raises(ValueError, match="n_experts=3"):
        viz.token_experts_by_layer(toy["tokens"], ids_LT * 0 + 3, 3)


def test_routing_helpers(toy):
    routing = toy["routing"]
    load = viz.routing_load(routing)
    assert load.shape == (4, 4)
    np.testing.assert_allclose(load.sum(1), 1.0)
    np.testing.assert_allclose(load[2], np.bincount(routing[2].indices.reshape(-1).numpy(), minlength=4) / T)
    h = viz.routing_entropy(routing)
    p = routing[0].logits.softmax(-1)
    assert h[0] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-5)
    assert np.all(h <= math.log(4) + 1e-6) and np.all(h > 0)
    # two sequences of 10: row 1 is the second half of the flattened tokens
    ids_LT, scores_LT = viz.routing_top1(routing, seq_len=10, row=1)
    np.testing.assert_array_equal(ids_LT[0], routing[0].indices[10:, 0].numpy())
    np.testing.assert_allclose(scores_LT[3], routing[3].scores[10:, 0].numpy())
    with pytest.raises(ValueError, match="row 2"):
        viz.routing_top1(routing, seq_len=10, row=2)
    with pytest.raises(ValueError, match="empty"):
        viz.routing_load([])


# ------------------------------------------------------------------------------------------------- load, entropy
def test_expert_load(toy):
    load = viz.routing_load(toy["routing"])
    fig = drawn(viz.expert_load(torch.tensor(load), title="toy"))
    assert len(fig.axes) == 2
    (ax,) = panels(fig)
    np.testing.assert_allclose(ax.images[0].get_array(), load)
    assert ax.get_title() == "toy" and ax.get_xlabel() == "expert"
    assert len(ax.texts) == 16 and ax.texts[5].get_text() == f"{load[1, 1]:.2f}"
    cbar = [a for a in fig.axes if a not in panels(fig)][0]
    assert "1/E = 0.25" in cbar.get_ylabel()
    assert hlines(cbar) == [0.25]  # the uniform level marked on the colour bar
    assert ax.images[0].norm(0.25) == pytest.approx(0.5)  # white = uniform

    counts = np.array([[10, 30, 0, 60], [25, 25, 25, 25]])
    fig = drawn(viz.expert_load(counts, normalize=True, layer_ids=[1, 3], annotate=False))
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), counts / 100)
    assert len(fig.axes[0].texts) == 0 and fig.axes[0].get_yticklabels()[1].get_text() == "layer 3"
    assert fig.axes[0].images[0].get_array().shape == (2, 4)
    np.testing.assert_allclose(drawn(viz.expert_load([0.5, 0.5])).axes[0].images[0].get_array(), [[0.5, 0.5]])
    with pytest.raises(ValueError, match="normalize=True"):
        viz.expert_load(counts)
    with pytest.raises(ValueError, match=">= 0"):
        viz.expert_load([[-0.1, 1.1]])
    with pytest.raises(ValueError, match="1-D or 2-D"):
        viz.expert_load(np.zeros((2, 2, 2)))


def test_expert_load_over_training():
    rng = np.random.default_rng(0)
    load_SLE = rng.dirichlet(np.ones(4), (6, 2))  # History.expert_load: [eval][MoE layer][expert]
    steps = [100, 200, 300, 400, 500, 600]
    fig = drawn(viz.expert_load_over_training(load_SLE.tolist(), steps=steps, layer=1))
    (ax,) = panels(fig)
    np.testing.assert_allclose(ax.images[0].get_array(), load_SLE[:, 1].T)  # experts × steps
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in steps]
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "expert" and "layer 1" in ax.get_title()

    fig = drawn(viz.expert_load_over_training(load_SLE[:, 0], kind="area"))
    ax = fig.axes[0]
    assert len(ax.collections) == 4  # one band per expert, in its colour
    assert [tuple(c.get_facecolor()[0][:3]) for c in ax.collections] == [viz.expert_color(e)[:3] for e in range(4)]
    assert hlines(ax) == pytest.approx([0.25, 0.5, 0.75])
    assert ax.get_xlabel() == "snapshot"
    with pytest.raises(ValueError, match="layer="):
        viz.expert_load_over_training(load_SLE)
    with pytest.raises(ValueError, match="steps has 3 entries"):
        viz.expert_load_over_training(load_SLE, steps=[1, 2, 3], layer=0)
    with pytest.raises(ValueError, match="kind"):
        viz.expert_load_over_training(load_SLE[:, 0], kind="pie")


def test_router_entropy(toy):
    h = viz.routing_entropy(toy["routing"])
    fig = drawn(viz.router_entropy(h, n_experts=4))
    (ax,) = fig.axes
    np.testing.assert_allclose([p.get_height() for p in ax.patches], h)
    assert hlines(ax) == pytest.approx([math.log(4)])
    assert "ln 4" in ax.texts[0].get_text()

    h_SL = np.linspace(1.3, 0.5, 5)[:, None] * np.ones((1, 3))
    fig = drawn(viz.router_entropy(h_SL, steps=[0, 10, 20, 30, 40], n_experts=4, layer_ids=[1, 3, 5]))
    ax = fig.axes[0]
    curves = [l for l in ax.lines if l.get_label().startswith("layer")]
    assert [l.get_label() for l in curves] == ["layer 1", "layer 3", "layer 5"]
    np.testing.assert_allclose(curves[2].get_xdata(), [0, 10, 20, 30, 40])
    np.testing.assert_allclose(curves[2].get_ydata(), h_SL[:, 2])
    with pytest.raises(ValueError, match="exceeds ln E"):
        viz.router_entropy([2.0, 1.0], n_experts=4)
    with pytest.raises(ValueError, match=">= 0"):
        viz.router_entropy([-1.0])
    with pytest.raises(ValueError, match="steps has 2 entries"):
        viz.router_entropy(h_SL, steps=[0, 1])


# ------------------------------------------------------------------------------------------------- attention
def test_attention_mask():
    pos = torch.arange(T)
    mask = attention_mask(pos, pos, CHUNK)
    fig = drawn(viz.attention_mask(mask, chunk_size=CHUNK))
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), mask.numpy().astype(float))
    assert vlines(ax) == [7.5, 15.5] and hlines(ax) == [7.5, 15.5]  # between positions 7|8 and 15|16
    assert "chunk = 8" in ax.get_title() and ax.get_xlabel() == "key position s"

    fig = drawn(viz.attention_mask(np.tril(np.ones((5, 12), bool), k=7), chunk_size=4))
    assert vlines(fig.axes[0]) == [3.5, 7.5] and hlines(fig.axes[0]) == [3.5]  # keys past the queries
    fig = drawn(viz.attention_mask(attention_mask(pos, pos, None)))
    assert vlines(fig.axes[0]) == [] and fig.axes[0].get_title() == "causal mask"
    with pytest.raises(ValueError, match="2-D"):
        viz.attention_mask(np.ones(4, bool))
    with pytest.raises(ValueError, match="boolean"):
        viz.attention_mask(np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="chunk_size"):
        viz.attention_mask(mask, chunk_size=0)


def test_attention_maps_real(toy):
    cfg, weights = toy["cfg"], toy["weights"]
    rope = [cfg.uses_rope(i) for i in range(cfg.num_hidden_layers)]
    assert rope == [True, True, True, False]
    for w in weights:  # the inputs are real attention distributions
        torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, T))
    fig = drawn(viz.attention_maps(weights, rope, chunk_size=cfg.attention_chunk_size))
    axes = panels(fig)
    assert len(axes) == 4 * 4 and len(fig.axes) == 4 * 4 + 1  # layers × heads, one shared colour bar
    pos = toy["pos"]
    for i, ax in enumerate(axes):
        l, h = divmod(i, 4)
        title = ax.get_title()
        assert title.startswith(f"layer {l} · ") and f"head {h}" in title
        assert ("RoPE (chunked)" in title) == (l < 3) and ("NoPE (global)" in title) == (l == 3)
        img = ax.images[0].get_array()
        np.testing.assert_allclose(img.filled(0.0), weights[l][0, h].numpy())
        allowed = attention_mask(pos, pos, CHUNK if l < 3 else None).numpy()
        np.testing.assert_array_equal(np.ma.getmaskarray(img), ~allowed)  # white exactly where masked
        assert vlines(ax) == ([7.5, 15.5] if l < 3 else []) and hlines(ax) == ([7.5, 15.5] if l < 3 else [])

    # a stacked tensor [L, H, T, S], a choice of layers and heads, log colours
    stacked = torch.cat(weights)  # [L, H, T, S]
    fig = drawn(viz.attention_maps(stacked, rope, chunk_size=CHUNK, layers=[2, 3], heads=[1], scale="log"))
    axes = panels(fig)
    assert [a.get_title().split("\n")[0] for a in axes] == ["layer 2 · RoPE (chunked)", "layer 3 · NoPE (global)"]
    np.testing.assert_allclose(axes[1].images[0].get_array().filled(0), weights[3][0, 1].numpy())
    # without chunking the RoPE layers are global too, and no boundary is drawn
    fig = drawn(viz.attention_maps(stacked, rope, layers=[0], heads=[0]))
    assert panels(fig)[0].get_title().startswith("layer 0 · RoPE (global)") and vlines(panels(fig)[0]) == []


def test_attention_maps_rejects_bad_input(toy):
    w = toy["weights"]
    with pytest.raises(ValueError, match="layer_uses_rope has 3 entries for 4 layers"):
        viz.attention_maps(w, [True, True, True])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        viz.attention_maps([x * 2 for x in w], [True] * 4)
    with pytest.raises(ValueError, match="heads"):
        viz.attention_maps(w, [True] * 4, heads=[4])
    with pytest.raises(ValueError, match="layers"):
        viz.attention_maps(w, [True] * 4, layers=[7])
    with pytest.raises(ValueError, match="4-D or 5-D"):
        viz.attention_maps(torch.rand(4, T, T), [True] * 4)
    with pytest.raises(ValueError, match="scale"):
        viz.attention_maps(w, [True] * 4, scale="sqrt")


def test_temperature_curve(toy):
    cfg = toy["cfg"]
    fig = drawn(viz.temperature_curve(64, cfg.floor_scale, cfg.attn_scale))
    (ax,) = fig.axes
    line = ax.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(64))
    np.testing.assert_allclose(line.get_ydata(), temperature_scale(torch.arange(64), 4, 0.1).numpy())
    assert vlines(ax) == [3.0]  # p = floor_scale - 1 is the first scaled query
    assert ax.get_xscale() == "linear" and "NoPE" in ax.get_title()
    scout = minillama4.Llama4Config.preset("scout")
    fig = drawn(viz.temperature_curve(np.array([0, 100, 8190, 8191, 10**6]), scout.floor_scale, scout.attn_scale))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and vlines(ax) == [8192.0]  # plotted at p + 1
    np.testing.assert_allclose(ax.lines[0].get_ydata()[:4], [1.0, 1.0, 1.0, 1.0 + 0.1 * math.log(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="floor_scale"):
        viz.temperature_curve(10, 0, 0.1)
    with pytest.raises(ValueError, match="non-negative integers"):
        viz.temperature_curve([-1, 2], 4, 0.1)


# ------------------------------------------------------------------------------------------------- training
def test_loss_curves():
    train = np.linspace(5, 1, 50)
    fig = drawn(viz.loss_curves({"train": torch.tensor(train), "val": ([10, 20, 50], [4.0, 3.0, 1.5])},
                                title="toy", log_y=True))
    (ax,) = fig.axes
    assert [l.get_label() for l in ax.lines] == ["train", "val"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(50))
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [10, 20, 50])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [4.0, 3.0, 1.5])
    assert ax.get_yscale() == "log" and ax.get_title() == "toy" and ax.get_ylabel() == "loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    fig = drawn(viz.loss_curves({"a": train}, smooth=5, ylabel="accuracy"))
    raw, smooth = fig.axes[0].lines
    np.testing.assert_allclose(smooth.get_ydata(), np.convolve(train, np.ones(5) / 5, "valid"))
    assert smooth.get_xdata()[0] == 4 and fig.axes[0].get_ylabel() == "accuracy"
    assert len(drawn(viz.loss_curves({"two": (3.0, 2.0)})).axes[0].lines[0].get_ydata()) == 2  # values, not steps
    with pytest.raises(ValueError, match="2 steps for 3 values"):
        viz.loss_curves({"val": ([1, 2], [3.0, 2.0, 1.0])})
    with pytest.raises(ValueError, match="non-empty dict"):
        viz.loss_curves({})
    with pytest.raises(ValueError, match="log_y"):
        viz.loss_curves({"a": [1.0, 0.0]}, log_y=True)
    with pytest.raises(ValueError, match="1-D"):
        viz.loss_curves({"a": np.ones((2, 2))})
