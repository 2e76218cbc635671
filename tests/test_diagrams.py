"""minillama4.course.diagrams: every diagram renders to PNG (toy, Scout and Maverick where a config is drawn), and
shows what its config or worked example says, checked on the shapes and labels it drew (found by their gid)."""

import math
import re
import struct

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch
from matplotlib.text import Text

from minillama4 import Llama4, Llama4Config, VisionConfig
from minillama4.attention import attention_mask
from minillama4.course import diagrams
from minillama4.course.shapes import vlm_config
from minillama4.course.viz import NOPE_COLOR, ROPE_COLOR, expert_color, figure_to_png
from minillama4.course.zoo import recipes
from minillama4.image import image_prompt
from minillama4.quant import pack_int4, quantize_int4
from minillama4.train.distill import DistillConfig, alpha_at
from minillama4.train.dpo import DPOConfig
from minillama4.train.rl import RLConfig
from minillama4.train.sft import SFTConfig

PNG = b"\x89PNG\r\n\x1a\n"
PRESETS = ("toy", "scout", "maverick")


def png(fig) -> None:
    """Render to PNG (small, to stay fast) and check it is one. No pyplot manager: the figure is not in pyplot's
    registry, so it is freed with its last reference (nothing to close, nothing piles up)."""
    assert isinstance(fig, diagrams.VizFigure) and fig.canvas.manager is None
    assert figure_to_png(fig, dpi=30).startswith(PNG)


def shapes(fig, prefix: str) -> dict:
    """The patches whose gid starts with prefix, by gid."""
    return {p.get_gid(): p for p in fig.findobj(Patch) if (p.get_gid() or "").startswith(prefix)}


def label(fig, gid: str) -> str:
    (t,) = [t for t in fig.findobj(Text) if t.get_gid() == gid]
    return t.get_text()


def all_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def same_color(a, b) -> bool:
    return np.allclose(to_rgba(a), to_rgba(b), atol=1e-3)


@pytest.fixture(scope="module")
def configs():
    return {name: Llama4Config.preset(name) for name in PRESETS}


# --------------------------------------------------------------------------------------------------- 1. the layer
@pytest.mark.parametrize("name", PRESETS)
def test_decoder_block_shows_the_layer_the_config_builds(configs, name):
    cfg = configs[name]
    for i in (0, 3):  # a RoPE layer and a NoPE layer (layer 3: every 4th is NoPE in all three presets)
        fig = diagrams.decoder_block(cfg, i)
        text = all_text(fig)
        assert f"q {cfg.num_attention_heads} heads × {cfg.head_dim}" in label(fig, "qkv")
        assert f"{cfg.num_key_value_heads} kv heads" in label(fig, "qkv")
        assert f"D = {cfg.hidden_size}" in label(fig, "attn-norm")
        rope = cfg.uses_rope(i)
        assert bool(shapes(fig, "rope")) == rope and bool(shapes(fig, "nope")) == (not rope)
        assert bool(shapes(fig, "qk-norm")) == (rope and cfg.use_qk_norm)  # Maverick: no QK-norm
        assert bool(shapes(fig, "temperature")) == (not rope and cfg.attn_temperature_tuning)
        if rope:
            assert f"block of {cfg.attention_chunk_size} tokens" in label(fig, "mask")
        else:
            assert "global causal mask" in label(fig, "mask")
            assert f"⌊(p+1)/{cfg.floor_scale}⌋" in label(fig, "temperature")
        if cfg.is_moe_layer(i):
            E = cfg.num_local_experts
            assert f"({E} logits)" in label(fig, "router") and f"top-{cfg.num_experts_per_tok}" in label(fig, "router")
            want = set(range(E)) if E <= 8 else {0, 1, 2, 3, 4, E - 1}
            experts = shapes(fig, "expert:")
            assert {int(g.split(":")[1]) for g in experts} == want
            assert all(same_color(p.get_edgecolor(), expert_color(int(g.split(":")[1]))) for g, p in experts.items())
            assert f"{cfg.hidden_size}\n→ {cfg.intermediate_size}" in label(fig, "shared")
            assert not shapes(fig, "dense")
        else:  # Maverick's even layers
            assert not shapes(fig, "router") and not shapes(fig, "expert:")
            assert f"→ {cfg.intermediate_size_mlp} →" in label(fig, "dense")
        assert f"layer {i} of {cfg.num_hidden_layers}" in text
        if i == 0:
            png(fig)


def test_decoder_block_rejects_bad_input(configs):
    with pytest.raises(TypeError, match="Llama4Config"):
        diagrams.decoder_block("scout", 0)
    with pytest.raises(ValueError, match="layer_idx"):
        diagrams.decoder_block(configs["toy"], 4)


# --------------------------------------------------------------------------------------------------- 2. the stack
@pytest.mark.parametrize("name", PRESETS + ("irregular",))
def test_layer_stack_draws_exactly_the_config_layers(configs, name):
    cfg = configs.get(name) or configs["toy"].replace(num_hidden_layers=6, moe_layers=[0, 4],
                                                      no_rope_layers=[1, 0, 0, 1, 1, 1])
    fig = diagrams.layer_stack(cfg, title=name)
    L = cfg.num_hidden_layers
    attn, ffn = shapes(fig, "attn:"), shapes(fig, "ffn:")
    assert len(attn) == len(ffn) == L
    for i in range(L):
        assert same_color(attn[f"attn:{i}"].get_facecolor(), ROPE_COLOR if cfg.uses_rope(i) else NOPE_COLOR), i
        assert same_color(ffn[f"ffn:{i}"].get_facecolor(),
                          diagrams.MOE_COLOR if cfg.is_moe_layer(i) else diagrams.DENSE_COLOR), i
        assert label(fig, f"attn:{i}") == ("R" if cfg.uses_rope(i) else "N")
    n_rope, n_moe = sum(cfg.uses_rope(i) for i in range(L)), len(cfg.moe_layers)
    legend = "\n".join(t.get_text() for t in fig.legends[0].get_texts())
    assert f"C = {cfg.attention_chunk_size}  (×{n_rope})" in legend
    E, k = cfg.num_local_experts, cfg.num_experts_per_tok
    assert f"{E} routed experts (top-{k}) + shared expert  (×{n_moe})" in legend
    assert ("dense" in legend) == (n_moe < L)
    if name in PRESETS:
        png(fig)


# --------------------------------------------------------------------------------------------------- 3. dispatch
@pytest.fixture(scope="module")
def routing():
    """The routing of 8 real token ids by the first router of a random toy model with top-2."""
    torch.manual_seed(0)
    cfg = Llama4Config.preset("toy").replace(num_experts_per_tok=2)
    model = Llama4(cfg).eval()
    ids = torch.randint(3, cfg.vocab_size, (1, 8))
    with torch.no_grad():
        _, r = model(ids, return_routing=True)
    return ids[0], r[0].indices, r[0].scores, cfg.num_local_experts


def test_dispatch_example_sorts_by_expert_and_scatters_back(routing):
    ids, idx, scores, E = routing
    fig = diagrams.dispatch_example(ids, idx, scores, E)
    T, k = idx.shape
    rows = sorted(shapes(fig, "sorted:").values(), key=lambda p: -p.get_y())  # top to bottom
    slots = [int(p.get_gid().split(":")[2]) for p in rows]
    assert slots == torch.argsort(idx.reshape(-1), stable=True).tolist()
    for p, slot in zip(rows, slots):
        assert same_color(p.get_edgecolor(), expert_color(int(idx.reshape(-1)[slot])))
        assert label(fig, p.get_gid()) == f"{float(scores.reshape(-1)[slot]):.2f} · x[{slot // k}]"
    counts = torch.bincount(idx.reshape(-1), minlength=E)
    groups = shapes(fig, "group:")
    assert {int(g.split(":")[1]) for g in groups} == {e for e in range(E) if counts[e]}
    for g in groups:
        assert f"[{int(counts[int(g.split(':')[1])])}, D]" in label(fig, g)
    assert [label(fig, f"token:{t}") for t in range(T)] == [f"{t}: id {i}" for t, i in enumerate(ids.tolist())]
    assert len(shapes(fig, "out:")) == T
    png(fig)


def test_dispatch_example_with_token_strings_and_bad_input(routing):
    _, idx, scores, E = routing
    fig = diagrams.dispatch_example(["The", " cat", "\n", "sat"], idx[:4, 0], scores[:4, 0], E)
    assert label(fig, "token:1") == "1: '␣cat'"
    with pytest.raises(ValueError, match="tokens has 3 entries"):
        diagrams.dispatch_example(["a", "b", "c"], idx[:4], scores[:4], E)
    with pytest.raises(ValueError, match="n_experts"):
        diagrams.dispatch_example(list(range(4)), idx[:4], scores[:4], 2)
    with pytest.raises(ValueError, match="scores"):
        diagrams.dispatch_example(list(range(4)), idx[:4], scores[:4] + 1.5, E)
    with pytest.raises(ValueError, match="at most 16 tokens"):
        diagrams.dispatch_example(list(range(20)), torch.zeros(20, 1, dtype=torch.long), torch.ones(20, 1), E)


# --------------------------------------------------------------------------------------------------- 4. the MoE block
@pytest.mark.parametrize("name", PRESETS)
def test_shared_routed_moe(configs, name):
    cfg = configs[name]
    fig = diagrams.shared_routed_moe(cfg)
    D, F, E = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts
    assert f"SwiGLU {D} → {F} → {D}" in label(fig, "shared")
    assert f"W_r [{E}, {D}]" in label(fig, "router")
    assert f"(top-{cfg.num_experts_per_tok} of {E})" in label(fig, "routed")
    assert "expert_e(σ · x), not σ · expert_e(x)" in all_text(fig)
    png(fig)
    with pytest.raises(ValueError, match="no MoE layer"):
        diagrams.shared_routed_moe(cfg.replace(moe_layers=[]))


# --------------------------------------------------------------------------------------------------- 5. attention
@pytest.mark.parametrize("name, seq_len, decode_pos", [("toy", 160, None), ("scout", 32768, 20000),
                                                       ("maverick", 20000, 9000)])
def test_attention_patterns_masks_and_kv_cache(configs, name, seq_len, decode_pos):
    cfg = configs[name]
    C = cfg.attention_chunk_size
    fig = diagrams.attention_patterns(cfg, seq_len, decode_pos)
    rope_ax, nope_ax = fig.axes[:2]
    n = rope_ax.images[0].get_array().shape[0]
    s = round(rope_ax.images[0].get_extent()[1] / n)  # positions per cell
    assert n <= 96 and (s == 1 or C % s == 0)  # chunk edges fall on cell edges
    pos = torch.arange(0, seq_len, s)
    assert np.array_equal(rope_ax.images[0].get_array(), attention_mask(pos, pos, C).numpy())
    assert np.array_equal(nope_ax.images[0].get_array(), attention_mask(pos, pos, None).numpy())
    assert sorted(float(l.get_xdata()[0]) for l in rope_ax.lines if l.get_xdata()[0] == l.get_xdata()[1]) \
        == list(range(C, n * s, C))
    assert not nope_ax.lines
    p = seq_len - 1 if decode_pos is None else decode_pos
    (rope_bar,), (nope_bar,) = shapes(fig, "kept:RoPE").values(), shapes(fig, "kept:NoPE").values()
    assert (rope_bar.get_x(), rope_bar.get_width()) == (p // C * C, p % C + 1)  # the current chunk only
    assert (nope_bar.get_x(), nope_bar.get_width()) == (0, p + 1)  # everything
    png(fig)


def test_attention_patterns_bad_input(configs):
    with pytest.raises(ValueError, match="decode_pos"):
        diagrams.attention_patterns(configs["toy"], 100, decode_pos=100)
    with pytest.raises(ValueError, match="seq_len"):
        diagrams.attention_patterns(configs["toy"], 1)


# --------------------------------------------------------------------------------------------------- 6. vision
@pytest.mark.parametrize("which, grid", [("llama4", (2, 2)), ("llama4", (1, 1)), ("course", (1, 3))])
def test_vision_pipeline_numbers_and_slots(configs, which, grid):
    text_cfg = configs["scout"] if which == "llama4" else vlm_config()
    v = VisionConfig() if which == "llama4" else text_cfg.vision_config
    fig = diagrams.vision_pipeline(v, text_cfg, grid)
    G, n_tiles = v.grid_size, grid[0] * grid[1] + (grid != (1, 1))
    text = all_text(fig)
    assert f"{G}×{G} = {G * G} patches of {v.patch_size}×{v.patch_size} px" in text
    assert f"{G * G} × {v.hidden_size} → {v.tokens_per_tile} × {v.intermediate_size}" in text
    assert f"linear {v.vision_output_dim} → {text_cfg.hidden_size}" in label(fig, "projector")
    assert f"[{n_tiles * v.tokens_per_tile}, {text_cfg.hidden_size}]" in label(fig, "features")
    assert len(shapes(fig, "tile:")) == len(shapes(fig, "slots:")) == n_tiles  # one <|patch|> run per tile
    for t in range(n_tiles):  # each run of slots has its tile's colour
        assert same_color(shapes(fig, f"slots:{t}")[f"slots:{t}"].get_facecolor(),
                          shapes(fig, f"tile:{t}")[f"tile:{t}"].get_facecolor())
    n_tokens = len(re.findall(r"<\|[a-z_]+\|>", image_prompt(grid, v.tokens_per_tile)))
    assert f"one image = {n_tokens} tokens" in text
    if grid == (2, 2):
        png(fig)
    if which == "course":
        with pytest.raises(ValueError, match="tile grid"):
            diagrams.vision_pipeline(v, text_cfg, (5, 4))
        with pytest.raises(TypeError, match="VisionConfig"):
            diagrams.vision_pipeline(text_cfg, text_cfg)


# --------------------------------------------------------------------------------------------------- 7. distillation
def test_distillation_sizes_and_schedule():
    r = recipes("ci")
    teacher, student = r["mini-behemoth"].config, r["mini-scout"].config
    kd = DistillConfig(temperature=2.0, schedule="wsd", warmup_frac=0.1, decay_frac=0.3)
    fig = diagrams.distillation(teacher, student, kd, steps=200)
    assert f"{diagrams._si(teacher.num_parameters())} parameters" in label(fig, "teacher")
    assert f"{student.num_local_experts} experts (top-1), F = {student.intermediate_size}" in label(fig, "student")
    assert "T = 2" in all_text(fig) and "softmax(z / 2)" in label(fig, "kl")
    (line,) = [l for ax in fig.axes for l in ax.lines if l.get_gid() == "alpha"]
    assert np.allclose(line.get_ydata(), [alpha_at(s, 200, kd) for s in range(200)])
    png(fig)
    with pytest.raises(ValueError, match="vocabulary"):
        diagrams.distillation(teacher, student.replace(vocab_size=1000))


# --------------------------------------------------------------------------------------------------- 8. post-training
def test_posttrain_pipeline_numbers():
    sft = SFTConfig(steps=120, pool_size=1000, keep_fraction=0.3, judge_at=40)
    rl = RLConfig(steps=25, prompts_per_step=6, group_size=5, max_rounds=3)
    dpo = DPOConfig(steps=15, pairs_per_step=12, beta=0.2)
    fig = diagrams.posttrain_pipeline(sft, rl, dpo)
    text = all_text(fig)
    assert label(fig, "kept") == "kept 300\n(hardest)" and label(fig, "dropped") == "dropped\n700"
    assert "after 40 SFT steps" in text and "120 steps × 32" in text
    assert "25 steps × 6 prompts × 5 samples" in text and "up to 3 rounds" in text
    assert "15 steps × 12 pairs" in text and "β = 0.2" in text
    rewards = shapes(fig, "reward:")
    assert len(rewards) == 4 * 5  # four illustrated groups of group_size replies
    for g in (1, 2):  # all-equal groups: drawn faded (dropped)
        assert all(rewards[f"reward:{g}:{j}"].get_alpha() < 1 for j in range(5))
    png(diagrams.posttrain_pipeline())  # the course's own configs
    with pytest.raises(TypeError, match="RLConfig"):
        diagrams.posttrain_pipeline(sft, dpo, dpo)


# --------------------------------------------------------------------------------------------------- 9. int4
def test_int4_layout_matches_pack_int4():
    torch.manual_seed(0)
    w = Llama4(Llama4Config.preset("toy")).layers[0].feed_forward.shared_expert.gate_proj.weight[0, :16].detach()
    fig = diagrams.int4_layout(w, group_size=8)
    q, s = (t[0] for t in quantize_int4(w[None], 8))
    packed = pack_int4(q[None])[0].tolist()
    assert [label(fig, f"hex:{b}") for b in range(8)] == [f"0x{v:02X}" for v in packed]
    for b in range(8):  # the even element in the low nibble
        assert label(fig, f"nibble:{b}:low") == format(int(q[2 * b]) + 8, "04b")
        assert label(fig, f"nibble:{b}:high") == format(int(q[2 * b + 1]) + 8, "04b")
        assert int(label(fig, f"nibble:{b}:high") + label(fig, f"nibble:{b}:low"), 2) == packed[b]
    assert [label(fig, f"q:{i}") for i in range(16)] == [str(int(v)) for v in q]
    for j in range(2):
        assert f"= {float(s[j]):.4g}" in label(fig, f"scale:{j}")
    png(fig)
    assert shapes(diagrams.int4_layout(), "byte:")  # the default example row
    with pytest.raises(ValueError, match="group_size"):
        diagrams.int4_layout(w[:12], group_size=8)
    with pytest.raises(ValueError, match="2 … 24"):
        diagrams.int4_layout(torch.zeros(64), group_size=8)


# --------------------------------------------------------------------------------------------------- 10. all-to-all
def test_all_to_all_counts_and_destinations():
    tokens = [[0, 5, 2, 7, 1], [3, 3, 6, 0], [4, 1, 7, 7, 2, 5], [6, 0, 3]]
    fig = diagrams.all_to_all(4, tokens, experts_per_rank=2)
    for src, ids in enumerate(tokens):
        for dst in range(4):
            assert label(fig, f"count:{src}:{dst}") == str(sum(e // 2 == dst for e in ids))
    for dst in range(4):  # a rank receives exactly the tokens of its experts, grouped by sender, in order
        recv = sorted((g for g in shapes(fig, f"recv:{dst}:")), key=lambda g: int(g.split(":")[2]))
        got = [(int(g.split(":")[3]), int(g.split(":")[4])) for g in recv]
        assert got == [(src, t) for src, ids in enumerate(tokens) for t, e in enumerate(ids) if e // 2 == dst]
        for j in range(2):
            e = 2 * dst + j
            assert label(fig, f"expert:{e}") == f"e{e}: {sum(ids.count(e) for ids in tokens)}"
    png(fig)
    with pytest.raises(ValueError, match="expert_of_token"):
        diagrams.all_to_all(3, tokens, 2)
    with pytest.raises(ValueError, match="expert id 7"):
        diagrams.all_to_all(4, tokens, 1)
    with pytest.raises(ValueError, match="rank 0 would receive 13 tokens"):
        diagrams.all_to_all(2, [[0] * 7, [1] * 6], 2)


# --------------------------------------------------------------------------------------------------- 11. number formats
def test_number_formats_bits():
    fig = diagrams.number_formats(math.pi)
    layouts = {"fp32": (1, 8, 23), "bf16": (1, 8, 7), "fp8 e4m3": (1, 4, 3), "fp8 e5m2": (1, 5, 2)}
    for name, widths in layouts.items():
        assert [len(shapes(fig, f"bit:{name}:{f}:")) for f in ("sign", "exponent", "mantissa")] == list(widths)
    bits = "".join(label(fig, f"bit:fp32:{f}:{j}") for f, n in zip(("sign", "exponent", "mantissa"), (1, 8, 23))
                   for j in range(n))
    assert bits == format(struct.unpack(">I", struct.pack(">f", math.pi))[0], "032b")
    e4m3 = "".join(label(fig, f"bit:fp8 e4m3:{f}:{j}") for f, n in zip(("sign", "exponent", "mantissa"), (1, 4, 3))
                   for j in range(n))
    assert e4m3 == format(torch.tensor(math.pi).to(torch.float8_e4m3fn).view(torch.uint8).item(), "08b")
    assert "max 448" in all_text(fig) and "max 57344" in all_text(fig)
    assert [label(fig, f"bit:int4:{f}:{j}") for f, n in (("sign", 1), ("value", 3)) for j in range(n)] == list("0011")
    png(fig)
    with pytest.raises(ValueError, match="448"):
        diagrams.number_formats(1000.0)


# --------------------------------------------------------------------------------------------------- 12. FP8 training
@pytest.mark.parametrize("name", PRESETS)
def test_fp8_training_step_shapes_and_formats(configs, name):
    cfg = configs[name]
    fig = diagrams.fp8_training_step(cfg)
    D, F2 = cfg.hidden_size, 2 * cfg.intermediate_size
    assert set(shapes(fig, "")) >= {"x", "w", "g", "sx", "sw", "sg", "qx", "qw", "qg", "mm", "dx", "dw", "adamw"}
    assert label(fig, "qx").startswith(f"q_x  e4m3 [T, {D}]") and label(fig, "qw").startswith(f"q_w  e4m3 [{F2}, {D}]")
    assert label(fig, "qg").startswith(f"q_g  e5m2 [T, {F2}]")
    assert "/ 448" in label(fig, "sx") and "/ 57344" in label(fig, "sg")  # each format's largest value
    assert f"float32 [{F2}, {D}]" in label(fig, "dw") and f"[T, {D}]" in label(fig, "dx")
    png(fig)
    with pytest.raises(TypeError):
        diagrams.fp8_training_step("toy")


# --------------------------------------------------------------------------------------------------- 13. MetaP
def test_metap_groups_labels_each_weight_with_its_groups_scales():
    from minillama4 import metap

    cfg = Llama4Config.preset("toy").replace(hidden_size=256, num_attention_heads=8, num_key_value_heads=4,
                                             num_hidden_layers=12, parametrization="metap", base_hidden_size=64,
                                             base_num_layers=2)
    fig = diagrams.metap_groups(cfg)
    s = metap.scales(cfg)  # m = 4, d = 6
    boxes = {"embed": "embedding", "qkv": "hidden", "o": "branch_out", "router": "router", "gate_up": "hidden",
             "down": "branch_out", "lm_head": "readout", "attn_norm": "norm", "ffn_norm": "norm"}
    assert set(shapes(fig, "")) >= {f"{g}:{b}" for b, g in boxes.items()}
    for b, g in boxes.items():
        assert label(fig, f"scale:{b}") == f"init ×{s[g].init:.3g}\nlr ×{s[g].lr:.3g}", b
    assert label(fig, "scale:o") == "init ×0.0833\nlr ×0.0417"  # 1/(√4 · 6), 1/(4 · 6)
    assert label(fig, "fold:down").startswith("× 1/d = 0.167")
    assert "m = 4, d = 6" in all_text(fig) and "× 12 layers" in all_text(fig)
    png(fig)
    std = diagrams.metap_groups(Llama4Config.preset("toy"))  # standard: every multiplier 1
    assert all(label(std, f"scale:{b}") == "init ×1\nlr ×1" for b in boxes)
    with pytest.raises(TypeError):
        diagrams.metap_groups("toy")
