"""The vision path and early fusion vs transformers' Llama4ForConditionalGeneration on tiny random checkpoints that
transformers wrote: image features, logits with one and several images and tiles, generation, loading, saving,
and every bad input with a clear error."""

import json

import pytest
import torch

import minillama4
from minillama4 import Llama4, Llama4Config
from minillama4.checkpoint import CheckpointError
from minillama4.vision import VisionConfig, merge_image_features, patchify, pixel_shuffle, vision_rope_angles
from conftest import hf_text_config, load_hf, rel_err, transformers
from conftest import rewrite_checkpoint as _rewrite

TOL = 1e-5  # max |Δ| / max |ref| in float32
PATCH = 150  # <|patch|> id inside the tiny 160-token vocabulary
TILE = 28  # tiny tiles: 28×28 pixels, 7×7 patches → a 4×4 grid → 2×2 = 4 <|patch|> tokens per tile
TOKENS = 4


def tiny_vision(**over) -> dict:
    # the adapter reads hidden / ratio² = intermediate_size inputs, as in the real config (32 · 4 = 128)
    return dict(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=TILE,
                     patch_size=7, vision_output_dim=48, projector_input_dim=48, projector_output_dim=48), **over)


def write_vlm(path, kind="scout", seed=0, dtype=torch.float32, **vision_over):
    """A random Llama4ForConditionalGeneration written by transformers, with <|patch|> inside the vocabulary."""
    torch.manual_seed(seed)
    cfg = transformers.Llama4Config(text_config=hf_text_config(kind).to_dict(), vision_config=tiny_vision(**vision_over),
                                    image_token_index=PATCH)
    model = transformers.Llama4ForConditionalGeneration(cfg)
    with torch.no_grad():  # LayerNorms and biases away from their 1 / 0 init, so that a misplaced one shows
        for name, p in model.vision_model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn(p.shape))
    model.to(dtype).save_pretrained(str(path))
    return path


def tiles(n, seed=0):
    return torch.randn(n, 3, TILE, TILE, generator=torch.Generator().manual_seed(seed))


def prompt(*tiles_per_image, text=8, seed=0):
    """Token ids with the Llama 4 image layout (one grid row per image: 1×n tiles + a global tile when n > 1),
    text tokens between the images."""
    g = torch.Generator().manual_seed(seed)
    ids = [1]
    for n in tiles_per_image:
        ids += torch.randint(3, 140, (text,), generator=g).tolist()
        ids += [141]  # <|image_start|> stand-in
        if n > 1:
            for i in range(n):
                ids += [PATCH] * TOKENS + ([142] if i < n - 1 else [143])  # x separators, y separator after the row
        ids += [144] + [PATCH] * TOKENS + [145]  # <|image|>, the global (or only) tile, <|image_end|>
    ids += torch.randint(3, 140, (6,), generator=g).tolist()
    return torch.tensor(ids)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    path = write_vlm(tmp_path_factory.mktemp("vlm") / "scout")
    return path, minillama4.from_pretrained(path), load_hf(path, "conditional")


# ------------------------------------------------------------------------------------------------- config
def test_vision_config_round_trip_and_transformers_accepts_it():
    vc = VisionConfig()
    assert (vc.grid_size, vc.tokens_per_tile, vc.head_dim) == (24, 144, 88)
    hf = json.loads(json.dumps(vc.to_hf()))
    assert VisionConfig.from_hf(hf) == vc
    t = transformers.Llama4VisionConfig(**hf)
    assert VisionConfig.from_hf(t.to_dict()) == vc
    cfg = Llama4Config.preset("scout").replace(vision_config=vc)
    full = json.loads(json.dumps(cfg.to_hf()))
    assert full["architectures"] == ["Llama4ForConditionalGeneration"] and full["image_token_index"] == 200092
    assert Llama4Config.from_hf(full) == cfg
    assert Llama4Config.from_hf(transformers.Llama4Config(**full).to_dict()) == cfg
    with torch.device("meta"):  # real Scout + vision shapes, no memory
        model = Llama4(cfg)
    assert cfg.num_parameters() == model.num_parameters()
    assert cfg.num_parameters() - Llama4Config.preset("scout").num_parameters() == pytest.approx(0.87e9, rel=0.01)


@pytest.mark.parametrize("change, words", [
    (dict(image_size=30), "must divide image_size"),
    (dict(num_attention_heads=3), "must divide hidden_size"),
    (dict(hidden_size=36, num_attention_heads=6, intermediate_size=144), "multiple of 4"),
    (dict(intermediate_size=100), "intermediate_size=100 must equal hidden_size / pixel_shuffle_ratio"),
    (dict(pixel_shuffle_ratio=0.4), "pixel_shuffle_ratio"),
    (dict(image_size=21), "divisible by 1/pixel_shuffle_ratio"),
    (dict(projector_output_dim=64, vision_output_dim=64), "projector_input_dim=48 must equal"),
    (dict(vision_output_dim=64), "vision_output_dim=64 must equal"),
    (dict(num_channels=0), "num_channels must be a positive int"),
])
def test_invalid_vision_configs_raise_clear_errors(change, words):
    with pytest.raises(ValueError, match="invalid VisionConfig") as e:
        VisionConfig(**tiny_vision(**change))
    assert words in str(e.value)


# ------------------------------------------------------------------------------------------------- pieces
def test_patchify_is_unfold():
    x = tiles(3)
    want = torch.nn.Unfold(7, stride=7)(x).transpose(1, 2)
    assert torch.equal(patchify(x, 7), want)


def test_pixel_shuffle_is_the_reference_op():
    from transformers.models.llama4.modeling_llama4 import pixel_shuffle as hf_pixel_shuffle
    x = torch.randn(3, 36, 8)
    assert torch.equal(pixel_shuffle(x, 0.5), hf_pixel_shuffle(x, 0.5))
    # each output token holds one 2×2 block of patches, row by row: token (0, 0) = patches (0,0), (0,1), (1,0), (1,1)
    blocks = pixel_shuffle(torch.arange(36.).reshape(1, 36, 1), 0.5)
    assert blocks[0, 0].tolist() == [0, 1, 6, 7]
    assert blocks[0, 4].tolist() == [14, 15, 20, 21]  # output (1, 1) covers patch rows 2-3, columns 2-3


@pytest.mark.parametrize("grid, head_dim", [(4, 16), (24, 88), (6, 12)])
def test_2d_rope_table_equals_the_reference(grid, head_dim):
    from transformers.models.llama4.modeling_llama4 import Llama4VisionRotaryEmbedding
    cfg = transformers.Llama4VisionConfig(**tiny_vision(image_size=grid * 7, hidden_size=head_dim * 2,
                                                        intermediate_size=head_dim * 8))
    want = Llama4VisionRotaryEmbedding._compute_freqs_ci(cfg)[:, 0, :]
    got = vision_rope_angles(grid, head_dim, 10000.0)
    assert got.shape == want.shape == (grid * grid + 1, head_dim // 2)
    assert torch.allclose(torch.view_as_real(got), torch.view_as_real(want), atol=1e-6)
    assert torch.equal(got[-1], torch.ones(head_dim // 2, dtype=torch.complex64))  # class token: identity


def test_merge_replaces_patch_positions_in_order():
    ids = torch.tensor([[1, PATCH, 5, PATCH], [PATCH, 6, 7, 8]])
    emb = torch.zeros(2, 4, 3)
    feats = torch.arange(9.).reshape(3, 3)
    out = merge_image_features(emb, ids, feats, PATCH)
    assert torch.equal(out[0, 1], feats[0]) and torch.equal(out[0, 3], feats[1]) and torch.equal(out[1, 0], feats[2])
    assert out[0, 0].abs().sum() == 0 and out[1, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="3 <|patch|> tokens .* 2 features"):
        merge_image_features(emb, ids, feats[:2], PATCH)


# ------------------------------------------------------------------------------------------------- parity
def test_image_features_match_transformers(vlm):
    _, ours, ref = vlm
    x = tiles(5)
    with torch.no_grad():
        want = ref.vision_model(x).last_hidden_state
        got = ours.vision_model(x)
        assert got.shape == want.shape == (5, TOKENS, 48)
        assert rel_err(want, got) <= TOL
        want_p = ref.multi_modal_projector(want.reshape(-1, 48))
        got_p = ours.image_features(x)
    assert got_p.shape == (5 * TOKENS, 64) and rel_err(want_p, got_p) <= TOL


@pytest.mark.parametrize("kind", ["scout", "maverick"])
@pytest.mark.parametrize("layout", [(1,), (3,), (2, 1, 4)], ids=["one-image", "three-tiles", "three-images"])
def test_logits_with_images_match_transformers(tmp_path, kind, layout):
    path = write_vlm(tmp_path / kind, kind, seed=1)
    ours, ref = minillama4.from_pretrained(path), load_hf(path, "conditional")
    n_tiles = sum(n + (n > 1) for n in layout)  # multi-tile images carry a global tile
    ids = prompt(*layout)[None]
    assert ids.shape[1] > 2 * 8  # crosses chunk boundaries of the tiny model
    x = tiles(n_tiles, seed=2)
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=x).logits
        got = ours(ids, pixel_values=x)
    assert rel_err(want, got) <= TOL
    assert torch.equal(want.argmax(-1), got.argmax(-1))
    with torch.no_grad():  # the image matters: other pixels, other logits
        assert rel_err(got, ours(ids, pixel_values=tiles(n_tiles, seed=3))) > 1e-3


def test_batch_of_two_prompts_with_images_matches_transformers(vlm):
    _, ours, ref = vlm
    a, b = prompt(2, seed=0), prompt(1, text=18, seed=1)
    assert len(a) == len(b)  # both rows: same length, images in different places
    ids = torch.stack([a, b])
    x = tiles(4, seed=4)  # row 0: 2 tiles + global, row 1: 1 tile
    with torch.no_grad():
        assert rel_err(ref(input_ids=ids, pixel_values=x).logits, ours(ids, pixel_values=x)) <= TOL


def test_greedy_generate_with_an_image(vlm):
    _, ours, ref = vlm
    ids, x = prompt(3)[None], tiles(4, seed=5)
    n = 12
    cached = ours.generate(ids, max_new_tokens=n, pixel_values=x)
    plain = ours.generate(ids, max_new_tokens=n, pixel_values=x, use_cache=False)
    assert torch.equal(cached, plain)
    hf = ref.generate(input_ids=ids, pixel_values=x, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                      eos_token_id=None, pad_token_id=0)
    assert torch.equal(cached, hf)
    with torch.no_grad():  # each generated token is the argmax of a full forward pass over the sequence so far
        full = ours(cached[:, :-1], pixel_values=x)
    assert torch.equal(full[0, ids.shape[1] - 1:].argmax(-1), cached[0, ids.shape[1]:])


# ------------------------------------------------------------------------------------------------- loading, saving
def test_save_pretrained_writes_what_transformers_loads(tmp_path):
    cfg = Llama4Config.preset("toy").replace(vision_config=VisionConfig(**tiny_vision(projector_input_dim=128,
                                             projector_output_dim=128, vision_output_dim=128)), image_token_id=10)
    torch.manual_seed(0)
    model = Llama4(cfg).eval()
    minillama4.save_pretrained(model, tmp_path / "m")
    again = minillama4.from_pretrained(tmp_path / "m")
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    ref = load_hf(tmp_path / "m", "conditional")
    ids = torch.tensor([[1, 20, 30, 7, 9] + [10] * TOKENS + [8, 40, 50]])
    x = tiles(1, seed=6)
    with torch.no_grad():
        assert rel_err(ref(input_ids=ids, pixel_values=x).logits, model(ids, pixel_values=x)) <= TOL


def test_missing_and_misshaped_vision_tensors(tmp_path):
    path = write_vlm(tmp_path / "a")
    _rewrite(path, lambda sd: sd.pop("vision_model.model.layers.1.mlp.fc2.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): vision_model.model.layers.1.mlp.fc2.bias"):
        minillama4.from_pretrained(path)
    path = write_vlm(tmp_path / "b")
    _rewrite(path, lambda sd: sd.__setitem__("vision_model.positional_embedding_vlm", torch.zeros(16, 32)))
    with pytest.raises(CheckpointError, match=r"positional_embedding_vlm has shape \[16, 32\], expected \[17, 32\]"):
        minillama4.from_pretrained(path)
    path = write_vlm(tmp_path / "c")
    _rewrite(path, lambda sd: sd.__setitem__("vision_model.model.layers.2.mlp.fc1.bias", torch.zeros(128)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\).*vision_model.model.layers.2.mlp.fc1.bias"):
        minillama4.from_pretrained(path)


def test_text_only_config_skips_the_vision_tensors(tmp_path):
    path = write_vlm(tmp_path / "a")
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("vision_config")
    (path / "config.json").write_text(json.dumps(cfg))
    m = minillama4.from_pretrained(path)
    assert m.config.vision_config is None and not hasattr(m, "vision_model")
    with pytest.raises(ValueError, match="no vision_config"):
        m(prompt(1)[None], pixel_values=tiles(1))


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_pixels_and_prompts_raise_clear_errors(vlm):
    _, ours, _ = vlm
    ids = prompt(1)[None]
    with pytest.raises(ValueError, match=r"4 <\|patch\|> tokens .* 8 features"):
        ours(ids, pixel_values=tiles(2))
    with pytest.raises(ValueError, match=r"8 <\|patch\|> tokens .* 4 features"):
        ours(torch.cat([ids, ids], 1), pixel_values=tiles(1))
    with pytest.raises(ValueError, match="0 <|patch|> tokens"):
        ours(torch.tensor([[1, 5, 6]]), pixel_values=tiles(1))
    with pytest.raises(ValueError, match="have 1 channels; this vision model takes 3"):
        ours(ids, pixel_values=tiles(1)[:, :1])
    with pytest.raises(ValueError, match=r"tiles are 56×56 pixels; this vision model takes 28×28"):
        ours(ids, pixel_values=torch.zeros(1, 3, 56, 56))
    with pytest.raises(ValueError, match=r"tiles \[num_tiles, channels, height, width\]"):
        ours(ids, pixel_values=tiles(1)[0])
    with pytest.raises(ValueError, match="normalised floats"):
        ours(ids, pixel_values=torch.zeros(1, 3, TILE, TILE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="patch"):
        ours.generate(ids, max_new_tokens=2, pixel_values=tiles(3))


def test_image_token_outside_the_vocabulary(tmp_path):
    cfg = Llama4Config.preset("toy").replace(vision_config=VisionConfig(**tiny_vision()))  # image_token_id 200092
    model = Llama4(cfg)
    with pytest.raises(ValueError, match="image_token_id=200092 is outside the vocabulary"):
        model(torch.tensor([[1, 2]]), pixel_values=tiles(1))
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 512)  # text alone still works


def test_preprocess_prompt_and_model_agree_end_to_end():
    from minillama4.course.data import course_tokenizer
    from minillama4.image import expand_image_tokens, preprocess

    tok = course_tokenizer()
    vc = VisionConfig(**tiny_vision(projector_input_dim=128, projector_output_dim=128, vision_output_dim=128))
    model = Llama4(Llama4Config.preset("toy").replace(vision_config=vc, image_token_id=tok.special_ids["<|patch|>"]))
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8), torch.randint(0, 256, (3, 30, 60), dtype=torch.uint8)]
    tiles_ = [preprocess(im, tile_size=vc.image_size) for im in images]
    assert [t.grid for t in tiles_] == [(1, 1), (2, 3)]
    text = expand_image_tokens("<|begin_of_text|>Here: <|image|> and <|image|>?", [t.grid for t in tiles_],
                               vc.tokens_per_tile)
    ids = torch.tensor([tok.encode(text)])
    pixels = torch.cat([t.pixel_values for t in tiles_])
    assert pixels.shape[0] == 1 + 7 and int((ids == model.config.image_token_id).sum()) == 8 * TOKENS
    with torch.no_grad():
        assert model(ids, pixel_values=pixels).shape == (1, ids.shape[1], 512)
    with pytest.raises(ValueError, match="<|patch|> tokens"):
        model(ids, pixel_values=tiles_[1].pixel_values)


# ------------------------------------------------------------------------------------------------- the toy task
def test_shapes_examples_are_what_they_say():
    import random

    from minillama4.course import shapes

    rng = random.Random(0)
    for task in shapes.TASKS * 20:
        ex = shapes.make_example(task, rng)
        for im, scene in zip(ex.images, ex.scenes):
            assert im.shape == (3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) and im.dtype == torch.uint8
            half = shapes.IMAGE_SIZE // 2
            for s in scene:  # the shape's colour is drawn in its cell, and in no other cell
                r, c = divmod(s.cell, 2)
                colour = torch.tensor(shapes.COLOURS[s.colour], dtype=torch.uint8)[:, None, None]
                hits = (im == colour).all(0)
                assert hits[r * half:(r + 1) * half, c * half:(c + 1) * half].sum() >= 20
                assert hits.sum() == hits[r * half:(r + 1) * half, c * half:(c + 1) * half].sum()
        if task == "colour":
            cell = shapes.CELLS.index(" ".join(ex.question.split()[4:6]))
            assert ex.answer == next(s.colour for s in ex.scenes[0] if s.cell == cell)
        elif task == "where":
            colour = ex.question.split()[3]
            assert ex.answer == shapes.CELLS[next(s.cell for s in ex.scenes[0] if s.colour == colour)]
        else:
            colour = ex.question.split()[4]
            has = [any(s.colour == colour for s in sc) for sc in ex.scenes]
            assert has == [ex.answer == "first", ex.answer == "second"]


def test_shapes_encoding_puts_labels_on_the_answer_only():
    from minillama4.course import shapes
    from minillama4.course.data import course_tokenizer

    tok = course_tokenizer()
    exs = shapes.make_examples(6, seed=0)
    b = shapes.encode(exs, tokens_per_tile=4)
    assert b.pixel_values.shape == (sum(len(e.images) for e in exs), 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    assert int((b.input_ids == tok.special_ids["<|patch|>"]).sum()) == 4 * len(b.pixel_values)
    for i, ex in enumerate(exs):
        target = b.labels[i][b.labels[i] != -100].tolist()
        assert tok.decode(target) == " " + ex.answer + "<|eot|>"
        n = b.prompt_len[i]
        assert torch.equal(b.labels[i, n - 1:n - 1 + len(target)], b.input_ids[i, n:n + len(target)])


class ScriptedVLM(torch.nn.Module):
    """Teacher-forced predictions scripted from a batch: the right answer tokens, except at the (row, k-th answer
    token) pairs in `wrong`; prompt positions predict token 7, which `accuracy` must ignore."""

    def __init__(self, config, batch, wrong):
        super().__init__()
        self.config, self.batch, self.wrong = config, batch, wrong

    def forward(self, input_ids, pixel_values=None):
        assert torch.equal(input_ids, self.batch.input_ids)
        labels = self.batch.labels
        pred = torch.where(labels == -100, 7, labels)
        for row, k in self.wrong:
            pos = (labels[row] != -100).nonzero().flatten()[k]
            pred[row, pos] = (labels[row, pos] + 1) % self.config.vocab_size
        return torch.nn.functional.one_hot(pred, self.config.vocab_size).float()


def test_blind_model_cannot_see_and_accuracy_is_exact_match():
    from minillama4.course import shapes

    config = shapes.vlm_config()
    exs = shapes.make_examples(30, seed=5)  # tasks in turn: colour, where, which_image, colour, ...
    b = shapes.encode(exs, config.vision_config.tokens_per_tile)
    answer_tokens = (b.labels[:3] != -100).sum(-1).tolist()  # answer + <|eot|>: "blue" 4, "top left" 4, "first" 5
    assert [ex.task for ex in exs[:3]] == list(shapes.TASKS) and min(answer_tokens) >= 4
    # one wrong token per task: row 0's first, row 1's closing <|eot|>, one in the middle of row 2's answer
    acc = shapes.accuracy(ScriptedVLM(config, b, [(0, 0), (1, answer_tokens[1] - 1), (2, 2)]), exs)
    assert acc == {t: 0.9 for t in shapes.TASKS}
    acc = shapes.accuracy(ScriptedVLM(config, b, [(0, 1), (3, 2), (6, 3), (4, 0)]), exs)
    assert acc == {"colour": 0.7, "where": 0.9, "which_image": 1.0}
    assert shapes.accuracy(ScriptedVLM(config, b, []), exs) == {t: 1.0 for t in shapes.TASKS}

    torch.manual_seed(0)
    model = Llama4(config).eval()
    with torch.no_grad():  # the blind path ignores the pixels entirely
        blind1 = shapes.answer_loss(model, b, see_images=False)[1]
        b.pixel_values = torch.zeros_like(b.pixel_values)
        assert torch.equal(blind1, shapes.answer_loss(model, b, see_images=False)[1])
        assert not torch.equal(blind1, shapes.answer_loss(model, b, see_images=True)[1])
