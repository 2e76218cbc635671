"""Preprocessing and the image-token layout, checked against Llama 4's rules (transformers' Llama4ImageProcessor needs
torchvision, which the test environment does not have) and the layout against transformers' own processor code."""

import numpy as np
import pytest
import torch

from minillama4.course.data import course_tokenizer
from minillama4.image import (MAX_TILES, best_canvas, expand_image_tokens, image_prompt, preprocess, split_tiles,
                              supported_canvases, size_without_distortion, to_chw_uint8)


def test_supported_canvases():
    # the reference's own example: max 4 tiles of 224
    got = supported_canvases(4, 224)
    assert sorted(got) == sorted([(224, 896), (448, 448), (224, 224), (896, 224), (224, 672), (672, 224), (224, 448),
                                  (448, 224)])
    assert len(got) == len(set(got))
    grids = {(h // 336, w // 336) for h, w in supported_canvases(16, 336)}
    assert grids == {(h, w) for h in range(1, 17) for w in range(1, 17) if h * w <= 16}


def test_best_canvas_rules():
    res = [(224, 672), (672, 224), (224, 448), (448, 224), (224, 224)]
    assert best_canvas((200, 300), res) == (224, 448)  # the smallest upscale 1.12, least area among the two
    all16 = supported_canvases(16, 336)
    assert best_canvas((336, 336), all16) == (336, 336)  # fits exactly: scale 1, one tile
    assert best_canvas((100, 80), all16) == (336, 336)  # small: one tile (upscaled canvas, least area)
    assert best_canvas((336, 700), all16) == (336, 1008)  # wide: one row of three tiles
    assert best_canvas((700, 700), all16) == (1008, 1008)  # the least upscale ≥ 1 is 1008/700, on a 3×3 grid
    assert best_canvas((5000, 5000), all16) == (1344, 1344)  # must shrink: the least downscale, 4×4
    assert best_canvas((100, 80), all16, resize_to_max_canvas=True) == (1344, 1344)  # the largest upscale
    assert best_canvas((10000, 100), all16) == (5376, 336)  # 16×1 grid


def test_size_without_distortion():
    assert size_without_distortion((800, 600), (450, 1300)) == (450, 337)
    assert size_without_distortion((200, 300), (450, 200)) == (133, 200)
    assert size_without_distortion((336, 700), (336, 1008)) == (336, 700)


def _quadrants(h, w):
    """A uint8 image whose four quadrants have four colours."""
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0, : h // 2, : w // 2] = 255  # red top left
    img[1, : h // 2, w // 2:] = 255  # green top right
    img[2, h // 2:, : w // 2] = 255  # blue bottom left
    img[:, h // 2:, w // 2:] = 255  # white bottom right
    return img


def test_single_tile_image_is_normalised_and_padded():
    t = preprocess(_quadrants(20, 28), tile_size=28)
    assert t.grid == (1, 1) and t.num_tiles == 1 and t.pixel_values.shape == (1, 3, 28, 28)
    assert t.resized == (20, 28)  # no upscaling past the tile: the image stays 20×28, padded below
    assert t.pixel_values.dtype == torch.bfloat16
    px = t.pixel_values[0].float()
    assert torch.equal(px[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # red → (1, -1, -1)
    assert torch.equal(px[:, 19, 27], torch.tensor([1.0, 1.0, 1.0]))  # white
    assert torch.all(px[:, 20:] == -1)  # padding is black → -1


def test_multi_tile_image_tiles_row_major_plus_global():
    img = _quadrants(56, 56)
    t = preprocess(img, tile_size=28)
    assert t.grid == (2, 2) and t.num_tiles == 5  # 4 tiles + the global tile, last
    colours = [t.pixel_values[i].float().mean((1, 2)) for i in range(4)]
    want = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]]  # red, green | blue, white: row-major
    for c, w in zip(colours, want):
        assert torch.equal(c, torch.tensor(w, dtype=torch.float32))
    glob = t.pixel_values[4].float()
    assert glob.shape == (3, 28, 28) and torch.equal(glob[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(split_tiles(img, 2, 2)[1], img[:, :28, 28:])


def test_wide_image_and_downscaling():
    t = preprocess(torch.full((3, 30, 100), 128, dtype=torch.uint8), tile_size=28)
    # scales: 1×4 canvas (28×112) fits at min(28/30, 112/100) = 0.93 < 1; 2×4 (56×112) at 1.12 ≥ 1: the least upscale
    assert t.grid == (2, 4) and t.num_tiles == 9 and t.resized == (30, 100)
    big = preprocess(torch.zeros(3, 1000, 1000, dtype=torch.uint8), tile_size=28, max_tiles=4)
    assert big.grid == (2, 2) and big.resized == (56, 56)


def test_pil_numpy_and_tensor_inputs_agree():
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    a = preprocess(arr, tile_size=28).pixel_values
    b = preprocess(Image.fromarray(arr), tile_size=28).pixel_values
    c = preprocess(torch.from_numpy(arr).permute(2, 0, 1), tile_size=28).pixel_values
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("bad, words", [
    (torch.zeros(4, 10, 10), "expected 3 colour channels"),
    (torch.zeros(1, 10, 10), "expected 3 colour channels"),
    (torch.zeros(10, 10), r"must be \[channels, height, width\]"),
    (torch.zeros(3, 0, 10), "empty image"),
    (torch.full((3, 5, 5), 300.0), r"must lie in \[0, 255\]"),
    (np.zeros((10, 10)), r"must be \[height, width, channels\]"),
    ("cat.png", "expected a PIL image"),
])
def test_bad_images_raise_clear_errors(bad, words):
    with pytest.raises(ValueError, match=words):
        preprocess(bad, tile_size=28)


def test_too_many_tiles_is_an_error():
    with pytest.raises(ValueError, match=f"max_tiles must be between 1 and {MAX_TILES}"):
        preprocess(torch.zeros(3, 10, 10, dtype=torch.uint8), max_tiles=20)
    with pytest.raises(ValueError, match="5×4 is not allowed"):
        image_prompt((5, 4), 144)


@pytest.mark.parametrize("grid", [(1, 1), (1, 3), (2, 2), (4, 4), (3, 1)])
def test_layout_equals_transformers_processor(grid):
    from transformers.models.llama4.processing_llama4 import Llama4Processor
    want = Llama4Processor._prompt_split_image(None, grid, 144)  # uses only its arguments
    assert image_prompt(grid, 144) == want


def test_layout_token_counts():
    tok = course_tokenizer()
    ids = tok.encode(image_prompt((1, 1), 144))
    assert len(ids) == 147 and ids.count(tok.special_ids["<|patch|>"]) == 144
    ids = tok.encode(image_prompt((2, 3), 144))
    sid = tok.special_ids
    assert ids.count(sid["<|patch|>"]) == 144 * 7  # 6 tiles + the global tile
    assert ids.count(sid["<|tile_x_separator|>"]) == 2 * 2 and ids.count(sid["<|tile_y_separator|>"]) == 2
    assert ids[0] == sid["<|image_start|>"] and ids[-1] == sid["<|image_end|>"]
    assert ids[-146] == sid["<|image|>"]  # just before the global tile's 144 patches


def test_expand_image_tokens():
    text = "<|begin_of_text|>Compare <|image|> and <|image|>."
    out = expand_image_tokens(text, [(1, 1), (1, 2)], 4)
    assert out == ("<|begin_of_text|>Compare " + image_prompt((1, 1), 4) + " and " + image_prompt((1, 2), 4) + ".")
    with pytest.raises(ValueError, match=r"2 <\|image\|> placeholder\(s\) but 1 image"):
        expand_image_tokens(text, [(1, 1)], 4)


def test_to_chw_accepts_float_tensors_in_0_255():
    assert torch.equal(to_chw_uint8(torch.full((3, 2, 2), 254.6)), torch.full((3, 2, 2), 255, dtype=torch.uint8))
