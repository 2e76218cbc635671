"""Images in, tiles and prompt tokens out: Llama 4's preprocessing and its image-token layout.

An image of any size becomes one or more square tiles of S×S pixels (S = 336 for Llama 4):

    1. canvases   every grid of h × w tiles with h·w ≤ max_tiles (16): canvases of (h·S) × (w·S) pixels
    2. choose     the scale that fits the image into a canvas without distortion: the smallest scale ≥ 1 (upscale
                  as little as possible), or if none, the largest scale < 1 (downscale as little as possible);
                  ties → the canvas with the least area (least padding)
    3. resize     keep the aspect ratio (bilinear), upscaling no further than S unless resize_to_max_canvas
    4. pad        bottom and right with 0 (black, which becomes -1 after normalisation)
    5. normalise  x / 255, then (x - 0.5) / 0.5 → [-1, 1] (in bfloat16, as the reference does)
    6. split      into the h × w tiles, row-major; if there is more than one, add a GLOBAL tile: the whole
                  image resized (distorted) to S × S, last

In the text, each image becomes (here for a 2 × 2 grid; N = tokens per tile = 144):

    <|image_start|>  <|patch|>×N <|tile_x_separator|> <|patch|>×N <|tile_y_separator|>
                     <|patch|>×N <|tile_x_separator|> <|patch|>×N <|tile_y_separator|>
                     <|image|> <|patch|>×N  <|image_end|>                       ← the global tile

A single-tile image is just `<|image_start|><|image|><|patch|>×N<|image_end|>`. The model replaces the embeddings of
the `<|patch|>` tokens by the image features, tile by tile (minillama4.vision.merge_image_features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_TILES = 16  # Llama 4's max_patches / max_num_chunks: tiles of the canvas (the global tile comes on top)
IMAGE_MEAN, IMAGE_STD = 0.5, 0.5  # per channel, after scaling to [0, 1]
PLACEHOLDER = "<|image|>"  # what a chat message holds for each image before expand_image_tokens


@dataclass
class ImageTiles:
    pixel_values: torch.Tensor  # [n_tiles, C, S, S] normalised tiles, row-major, then the global tile (if grid > 1×1)
    grid: tuple[int, int]  # (rows, cols) of tiles on the canvas; (1, 1) = a single tile, no global tile
    resized: tuple[int, int]  # (height, width) of the image after the resize, before padding

    @property
    def num_tiles(self) -> int:
        return self.pixel_values.shape[0]


# ------------------------------------------------------------------------------------------------- canvas choice
def supported_canvases(max_tiles: int, tile_size: int) -> list[tuple[int, int]]:
    """Every canvas (height, width) in pixels made of h × w tiles with h·w ≤ max_tiles, in the reference's order
    (grouped by aspect ratio, as met going from max_tiles tiles down to 1)."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for n in range(max_tiles, 0, -1):
        for h in sorted(d for d in range(1, n + 1) if n % d == 0):
            by_ratio.setdefault(h / (n // h), []).append((h, n // h))
    return [(h * tile_size, w * tile_size) for grids in by_ratio.values() for h, w in grids]


def best_canvas(image_size: tuple[int, int], canvases: list[tuple[int, int]],
                resize_to_max_canvas: bool = False) -> tuple[int, int]:
    """The canvas (height, width) an image of image_size = (height, width) is fitted into: with s = the scale that
    fits it without distortion (min over the two sides), the smallest s ≥ 1 (or the largest s ≥ 1 with
    resize_to_max_canvas), else the largest s < 1; among canvases with that s, the one with the least area."""
    H, W = image_size
    cand = torch.tensor(canvases, dtype=torch.float32)  # float32 scale arithmetic, as the reference
    scale_C = torch.minimum(cand[:, 0] / H, cand[:, 1] / W)  # the limiting side: no distortion
    up = scale_C[scale_C >= 1]
    if len(up):
        s = up.max() if resize_to_max_canvas else up.min()
    else:
        s = scale_C[scale_C < 1].max()
    chosen = [canvases[i] for i in torch.nonzero(scale_C == s).flatten().tolist()]
    return min(chosen, key=lambda hw: hw[0] * hw[1])  # least padding (first one on ties)


def size_without_distortion(image_size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The largest (height, width) with the image's aspect ratio that fits in target (floor on the short side)."""
    (H, W), (tH, tW) = image_size, target
    sw, sh = tW / W, tH / H
    if sw < sh:
        return min(int(np.floor(H * sw)), tH), tW
    return tH, min(int(np.floor(W * sh)), tW)


# ------------------------------------------------------------------------------------------------- pixels
def to_chw_uint8(image) -> torch.Tensor:
    """A PIL image (converted to RGB), a NumPy array [H, W, C] or a torch tensor [C, H, W], with values 0 … 255 →
    uint8 [C, H, W]. Anything else is an error that says what was expected."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        image = np.array(image.convert("RGB"))  # a writable copy
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"a NumPy image must be [height, width, channels], got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"expected a PIL image, a NumPy array [H, W, C] or a tensor [C, H, W], got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(f"an image tensor must be [channels, height, width], got shape {tuple(image.shape)}")
    if image.shape[0] != 3:
        raise ValueError(f"expected 3 colour channels (RGB) first, got a tensor of shape {tuple(image.shape)} "
                         "(convert greyscale / RGBA images to RGB first; tensors are [C, H, W])")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"empty image of size {tuple(image.shape[1:])}")
    if image.is_floating_point():
        if image.min() < 0 or image.max() > 255:
            raise ValueError(f"pixel values must lie in [0, 255], got [{float(image.min())}, {float(image.max())}]")
        image = image.round()
    return image.to(torch.uint8)


def resize(image_CHW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (anti-aliased when shrinking) resize of a uint8 image, rounded back to uint8."""
    if tuple(image_CHW.shape[1:]) == tuple(size):
        return image_CHW
    x = F.interpolate(image_CHW[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def normalize(image_CHW: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """uint8 0 … 255 → (x / 255 - mean) / std, computed in dtype (bfloat16 in the reference)."""
    x = image_CHW.to(dtype) * (1 / 255)
    return (x - IMAGE_MEAN) / IMAGE_STD


def split_tiles(image_CHW: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[C, rows·S, cols·S] → [rows·cols, C, S, S], row-major (left to right, then top to bottom)."""
    C, H, W = image_CHW.shape
    x = image_CHW.reshape(C, rows, H // rows, cols, W // cols)
    return x.permute(1, 3, 0, 2, 4).reshape(rows * cols, C, H // rows, W // cols)


def preprocess(image, tile_size: int = 336, max_tiles: int = MAX_TILES, resize_to_max_canvas: bool = False,
               dtype: torch.dtype = torch.bfloat16) -> ImageTiles:
    """One image → its normalised tiles (+ a global tile when there are several) and its tile grid."""
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    if not isinstance(max_tiles, int) or not 1 <= max_tiles <= MAX_TILES:
        raise ValueError(f"max_tiles must be between 1 and {MAX_TILES} (Llama 4 reads at most {MAX_TILES} tiles "
                         f"+ 1 global tile per image), got {max_tiles!r}")
    img = to_chw_uint8(image)
    H, W = img.shape[1:]
    canvas = best_canvas((H, W), supported_canvases(max_tiles, tile_size), resize_to_max_canvas)
    target = canvas
    if not resize_to_max_canvas:  # upscale no further than one tile (small images stay small, padded)
        target = (min(max(H, tile_size), canvas[0]), min(max(W, tile_size), canvas[1]))
    new_h, new_w = size_without_distortion((H, W), target)
    new_h, new_w = max(new_h, 1), max(new_w, 1)
    resized = resize(img, (new_h, new_w))
    padded = F.pad(resized, (0, canvas[1] - new_w, 0, canvas[0] - new_h), value=0)  # bottom and right, black
    rows, cols = canvas[0] // tile_size, canvas[1] // tile_size
    tiles = split_tiles(normalize(padded, dtype), rows, cols)
    if rows * cols > 1:
        glob = normalize(resize(img, (tile_size, tile_size)), dtype)  # the whole image, distorted to one tile
        tiles = torch.cat([tiles, glob[None]])
    return ImageTiles(tiles, (rows, cols), (new_h, new_w))


# ------------------------------------------------------------------------------------------------- prompt layout
def image_prompt(grid: tuple[int, int], tokens_per_tile: int, max_tiles: int = MAX_TILES) -> str:
    """The special tokens that stand for one image with a grid = (rows, cols) of tiles (see the module doc)."""
    rows, cols = grid
    if rows < 1 or cols < 1 or rows * cols > max_tiles:
        raise ValueError(f"a tile grid of {rows}×{cols} is not allowed: 1 to {max_tiles} tiles per image")
    if tokens_per_tile < 1:
        raise ValueError(f"tokens_per_tile must be >= 1, got {tokens_per_tile}")
    patches = "<|patch|>" * tokens_per_tile
    s = "<|image_start|>"
    if rows * cols > 1:
        for _ in range(rows):
            s += "<|tile_x_separator|>".join([patches] * cols) + "<|tile_y_separator|>"
    return s + "<|image|>" + patches + "<|image_end|>"  # the global tile (or the only tile)


def expand_image_tokens(text: str, grids: list[tuple[int, int]], tokens_per_tile: int) -> str:
    """Replace the i-th `<|image|>` placeholder of a prompt by image i's full layout. The number of placeholders
    must equal the number of images."""
    parts = text.split(PLACEHOLDER)
    if len(parts) - 1 != len(grids):
        raise ValueError(f"the text has {len(parts) - 1} {PLACEHOLDER} placeholder(s) but {len(grids)} image(s) "
                         "were given")
    out = parts[0]
    for grid, part in zip(grids, parts[1:]):
        out += image_prompt(grid, tokens_per_tile) + part
    return out
