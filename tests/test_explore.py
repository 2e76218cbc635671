"""minillama4.course.explore, headless: drive each explorer's widgets as a browser would (set a slider's value) and check
that the rendered picture and the HTML views change, that what they show is what the model computed, and that bad
input raises a ValueError (constructor) or is reported in the status line (typed text)."""

import numpy as np
import pytest
import torch

import minillama4
from minillama4.course import explore, viz
from minillama4.attention import attention_mask, temperature_scale
from minillama4.course.data import course_tokenizer
from minillama4.train import TrainConfig, train

PNG = b"\x89PNG\r\n\x1a\n"
CHUNK = 8
TEXTS = {"short": "417 + 38 = 455\ndef get_size(data, key):\n", "words": "The return statement leaves the call."}


def png(explorer) -> bytes:
    """The PNG bytes the explorer's Image widget shows now."""
    return bytes(explorer.image.value)


def toy_config(**over):
    return minillama4.Llama4Config.preset("toy").replace(attention_chunk_size=CHUNK, floor_scale=4, **over)


@pytest.fixture(scope="module")
def models():
    """Two random toy models of one architecture (layers 0-2 RoPE chunked by 8, layer 3 NoPE)."""
    out = {}
    for seed, name in ((0, "early"), (1, "late")):
        torch.manual_seed(seed)
        out[name] = minillama4.Llama4(toy_config()).eval()
    return out


@pytest.fixture(scope="module")
def tok():
    return course_tokenizer()


def ids_of(text, tok, cfg):
    return torch.tensor([[cfg.bos_token_id] + tok.encode(text)])


# --------------------------------------------------------------------------------------------------- routing
def test_routing_explorer_shows_what_the_routers_chose(models, tok):
    ex = explore.RoutingExplorer(models, texts=TEXTS)
    ids = ids_of(TEXTS["short"], tok, models["early"].config)
    assert ex.tokens == [tok.token_str(i) for i in ids[0, 1:].tolist()]  # BOS is routed but not drawn
    for name, m in models.items():
        with torch.no_grad():
            _, routing = m(ids, return_routing=True)
        r = ex.routed[name]
        for l, ro in enumerate(routing):
            np.testing.assert_array_equal(r.expert_LTK[l], ro.indices[1:].numpy())
            np.testing.assert_allclose(r.score_LTK[l], ro.scores[1:].numpy(), rtol=1e-6)
            np.testing.assert_allclose(r.sigma_LTE[l], torch.sigmoid(ro.logits[1:]).numpy(), rtol=1e-6)
            counts = np.bincount(ro.indices[1:].reshape(-1).numpy(), minlength=4)
            np.testing.assert_allclose(r.load_LE[l], counts / counts.sum())
    assert png(ex).startswith(PNG)
    n = len(tok.encode(TEXTS["short"]))  # the tokenizer's count, BOS not included
    assert ex.status.value.endswith(f">{n} tokens</span>") and len(ex.tokens) == n


def test_routing_layer_slider_redraws_picture_tokens_and_table(models):
    ex = explore.RoutingExplorer(models, texts=TEXTS)
    assert ex.layer.options == (("0", 0), ("1", 1), ("2", 2), ("3", 3))
    before = (png(ex), ex.tokens_html.value, ex.table_html.value)
    # the two random models must route some token differently between layers 0 and 2, or nothing could change
    assert any((r.expert_LTK[0] != r.expert_LTK[2]).any() for r in ex.routed.values())
    ex.layer.value = 2
    after = (png(ex), ex.tokens_html.value, ex.table_html.value)
    assert all(a != b for a, b in zip(before, after))
    assert after[0].startswith(PNG)
    titles = [ax.get_title(loc="left") for ax in ex.figure().axes]
    assert "early · MoE layer 2: top-1 expert per token (opacity = router score σ)" in titles
    assert any(t.startswith("late · MoE layer 2") for t in titles)


def test_routing_hover_and_table_carry_the_scores(models):
    ex = explore.RoutingExplorer(models, texts=TEXTS)
    ex.layer.value = 1
    r = ex.routed["late"]
    e, s = int(r.expert_LTK[1, 0, 0]), float(r.score_LTK[1, 0, 0])
    html = ex.tokens_html.value
    late = html[html.index("<b>late</b>"):]
    # the first token's span: its tooltip names its expert and score, its colour is that expert's
    assert f"expert {e} (σ = {s:.3f})" in late.split("</span>")[0]
    rgb = viz.expert_color(e)
    assert f"rgba({int(255 * rgb[0])}, {int(255 * rgb[1])}, {int(255 * rgb[2])}, {0.12 + 0.88 * s:.3f})" in \
        late.split("</span>")[0]
    table = ex.table_html.value
    assert table.count("<tr>") == len(ex.tokens) + 1
    assert f"<b>{r.sigma_LTE[1, 0, e]:.3f}</b>" in table  # the chosen expert's σ is bold


def test_routing_text_and_example_updates(models, tok):
    ex = explore.RoutingExplorer(models, texts=TEXTS)
    old = png(ex)
    ex.example.value = "words"
    words = [tok.token_str(i) for i in tok.encode(TEXTS["words"])]
    assert ex.text.value == TEXTS["words"]
    assert ex.tokens == words and png(ex) != old and f"{len(words)} tokens" in ex.status.value
    ex.text.value = "   "
    assert "empty" in ex.status.value and "b00020" in ex.status.value  # reported, nothing raised
    assert ex.tokens == words  # the last good text stays on screen
    ex.text.value = "1 + 1 = 2\n" * 40
    assert "the first 96 of" in ex.status.value and len(ex.tokens) == 95


def test_routing_explorer_on_a_loaded_checkpoint(models, tmp_path):
    minillama4.save_pretrained(models["late"], tmp_path / "ckpt")
    loaded = minillama4.from_pretrained(tmp_path / "ckpt")
    ex = explore.RoutingExplorer({"saved": models["late"], "loaded": loaded}, texts=TEXTS)
    for a, b in zip(ex.routed["saved"].__dict__.values(), ex.routed["loaded"].__dict__.values()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_routing_explorer_rejects_bad_input(models, tok):
    with pytest.raises(ValueError, match="Llama4 model"):
        explore.RoutingExplorer({"a": "not a model"})
    with pytest.raises(ValueError, match="1 to 4 models"):
        explore.RoutingExplorer({})
    dense = minillama4.Llama4(toy_config(moe_layers=[]))
    with pytest.raises(ValueError, match="no MoE layer"):
        explore.RoutingExplorer(dense)
    odd = minillama4.Llama4(toy_config(moe_layers=[1, 3]))
    with pytest.raises(ValueError, match="same MoE layers"):
        explore.RoutingExplorer({"scout-like": models["early"], "maverick-like": odd})
    small = minillama4.Llama4(toy_config(vocab_size=300))
    with pytest.raises(ValueError, match="outside the vocabulary of model 'model'"):
        explore.RoutingExplorer(small, texts={"t": "The return statement leaves the call."})
    with pytest.raises(ValueError, match="tokenizer needs encode"):
        explore.RoutingExplorer(models["early"], tokenizer=object())
    with pytest.raises(ValueError, match="empty"):
        explore.RoutingExplorer(models["early"], text="")


def test_explorer_displays_as_a_widget(models):
    ex = explore.RoutingExplorer(models["early"], texts=TEXTS)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id


# --------------------------------------------------------------------------------------------------- attention
@pytest.fixture(scope="module")
def attn(models):
    text = "The return statement leaves the current function call.\n417 + 38 = 455\n"  # > 2 chunks of 8
    return explore.AttentionExplorer(models["late"], texts={"t": text})


def test_attention_explorer_shows_the_models_weights(attn, models, tok):
    ids = ids_of(attn.text.value, tok, models["late"].config)
    with torch.no_grad():
        _, weights = models["late"](ids, return_attention=True)
    T = ids.shape[1]
    assert attn.weights_LHTT.shape == (4, 4, T, T)
    for l, w_BHTS in enumerate(weights):
        np.testing.assert_allclose(attn.weights_LHTT[l], w_BHTS[0].numpy(), rtol=1e-6)
    assert attn.query.max == T - 1 and attn.query.value == T - 1


def test_attention_sliders_redraw(attn):
    seen = {png(attn)}
    for slider, value in ((attn.layer, 3), (attn.head, 2), (attn.query, 5), (attn.layer, 0)):
        html = attn.looks_html.value
        slider.value = value
        assert png(attn).startswith(PNG) and png(attn) not in seen
        seen.add(png(attn))
        if slider is not attn.layer or value == 0:
            assert attn.looks_html.value != html


def test_attention_picture_marks_layer_kind_chunks_mask_and_query(attn):
    T = len(attn.tokens)
    attn.head.value, attn.query.value = 1, 12
    for layer, kind in ((0, "RoPE, chunked (C = 8)"), (3, "NoPE, global, temperature-tuned queries")):
        attn.layer.value = layer
        assert kind in attn.kind.value
        fig = attn.figure()
        ax, bx, tx = [a for a in fig.axes if a.get_label() != "<colorbar>"]
        assert ax.get_title().startswith(f"layer {layer} · {kind} · head 1")
        image = ax.get_images()[0].get_array()
        pos = torch.arange(T)
        mask = attention_mask(pos, pos, CHUNK if layer == 0 else None).numpy()
        np.testing.assert_array_equal(np.ma.getmaskarray(image), ~mask)  # grey exactly where the mask forbids
        np.testing.assert_allclose(image.data, attn.weights_LHTT[layer, 1])
        vlines = sorted(l.get_xdata()[0] for l in ax.lines if list(l.get_ydata()) == [0, 1])
        assert vlines == ([b - 0.5 for b in range(CHUNK, T, CHUNK)] if layer == 0 else [])
        assert len(vlines) >= 2 or layer == 3
        # the query's marker on the temperature curve: scaled on the NoPE layer, 1 on RoPE layers
        (marker,) = [l for l in tx.lines if l.get_marker() == "o"]
        want = float(temperature_scale(torch.tensor([12]), 4, 0.1)) if layer == 3 else 1.0
        assert marker.get_xdata()[0] == 12 and marker.get_ydata()[0] == pytest.approx(want)
        assert "query 12" in bx.get_title()
    assert want > 1.0  # position 12 with floor_scale 4 is temperature-scaled


def test_attention_looks_html_highlights_the_query_and_greys_masked_keys(attn):
    attn.layer.value, attn.head.value, attn.query.value = 0, 0, 10  # chunk of 8: query 10 sees keys 8-10
    spans = attn.looks_html.value.replace("<br>", "").split("</span>")[:-1]
    assert len(spans) == len(attn.tokens)
    assert "query 10" in spans[10] and "font-weight:bold" in spans[10]
    assert all("masked for query 10" in spans[s] for s in list(range(8)) + list(range(11, len(spans))))
    assert all("weight" in spans[s] and "masked" not in spans[s] for s in (8, 9))


def test_attention_explorer_rejects_bad_input(models):
    with pytest.raises(ValueError, match="Llama4 model"):
        explore.AttentionExplorer(None)
    with pytest.raises(ValueError, match="gamma"):
        explore.AttentionExplorer(models["early"], gamma=0)
    ex = explore.AttentionExplorer(models["early"], texts=TEXTS)
    ex.text.value = ""
    assert "empty" in ex.status.value


# --------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 512, (4000,), generator=g), torch.randint(3, 512, (1000,), generator=g)


def small_run(config, stream, dash, steps=6):
    torch.manual_seed(0)
    model = minillama4.Llama4(config)
    cfg = TrainConfig(steps=steps, batch_size=2, seq_len=16, warmup_steps=1, eval_every=3, eval_batches=1)
    return train(model, *stream, cfg, progress=False, on_step=dash.on_step, on_eval=dash.on_eval)


def test_dashboard_follows_a_training_run(stream):
    dash = explore.TrainingDashboard(6, title="tiny")
    with pytest.raises(ValueError, match="no evaluation yet"):
        dash.figure()
    hist = small_run(toy_config(), stream, dash)
    assert dash.progress.value == 6 and dash.progress.bar_style == "success"
    assert "6 / 6 steps" in dash.label.value and f"val loss {hist.val_loss[-1]:.3f}" in dash.label.value
    assert dash.redraws == 2 and png(dash).startswith(PNG)  # one redraw per evaluation (steps 3 and 6)
    assert dash.layer.max == 3 and not dash.layer.disabled
    loss_ax, load_ax = dash.figure().axes
    np.testing.assert_allclose(loss_ax.lines[2].get_ydata(), hist.val_loss)  # raw, smoothed train, validation
    for e in range(4):
        np.testing.assert_allclose(load_ax.lines[e].get_ydata(), [ev[0][e] for ev in hist.expert_load])
    old = png(dash)
    dash.layer.value = 2  # after the run, the slider still redraws
    assert png(dash) != old and "MoE layer 2" in dash.figure().axes[1].get_title()


def test_dashboard_throttles_redraws_and_handles_dense_models(stream):
    dash = explore.TrainingDashboard(9, min_interval=3600)
    small_run(toy_config(moe_layers=[]), stream, dash, steps=9)  # evaluations at 3, 6, 9
    assert dash.redraws == 2  # the first evaluation and the last one
    assert dash.layer.disabled
    assert "no MoE layer" in dash.figure().axes[1].texts[0].get_text()


def test_dashboard_rejects_bad_input():
    with pytest.raises(ValueError, match="total_steps"):
        explore.TrainingDashboard(0)
    with pytest.raises(ValueError, match="smooth"):
        explore.TrainingDashboard(5, smooth=0)
