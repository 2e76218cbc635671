# GENERATED from solutions/ch06_early_fusion.py by scripts/make_exercises.py (stub 55f6a4428137): this is your file, fill in the stubs.
"""Chapter 06 exercises: the steps that turn an image into tokens of the text stream.

Fill in each function between the markers; check it in the notebook with `check("name", ex.function)` or grade the
whole chapter with `minillama4 grade 6`. Shapes: N tiles, C channels, S tile side in pixels, p patch side,
G = S / p patches per side, W ViT width, B batch, T tokens, D text width.
"""

import torch


def patchify(pixels_NCHW: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut each tile [C, S, S] into G×G non-overlapping p×p patches and flatten each one.
    Returns [N, G², C·p·p]: patches in row-major order over the grid (left to right, then top to bottom), each patch
    flattened as (channel, row, col), i.e. exactly what `torch.nn.Unfold(p, stride=p)` followed by a transpose gives
    (but write it with reshape/permute)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def vision_rope_angles(grid_size: int, head_dim: int, theta: float) -> torch.Tensor:
    """The 2-D RoPE of the Llama 4 ViT as a table of unit complex numbers e^{jφ}: complex64 [G² + 1, head_dim / 2],
    one row per token: the G² patches (row-major, patch i at column x = i % G, row y = i // G), then the class token.
    With P = head_dim / 4 and base frequencies f_j = 1 / θ^(4j / head_dim) for j = 0 … P-1:
        pair j       (j < P)  has angle (x + 1) · f_j
        pair P + j            has angle (y + 1) · f_j
    and every pair of the class token (the last row) has angle 0. Angles in float32; `torch.polar` builds e^{jφ}."""
    # YOUR CODE HERE
    raise NotImplementedError()


def pixel_shuffle(x_NPW: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Llama 4's pixel shuffle: [N, G², W] → [N, (rG)², W / r²], in exactly the reference's order of operations
    (with g = r·G, every size an int):
        view [N, G, G, W] → view [N, G, g, W / r] → swap axes 1 and 2 → view [N, g, g, W / r²]
        → swap axes 1 and 2 back → flatten the two spatial axes.
    (`.reshape` is fine where a view is not possible after a swap.) The result: output token (y', x') is the
    concatenation of the 1/r × 1/r block of patches it covers, row by row (for r = 0.5: top-left, top-right,
    bottom-left, bottom-right), each patch's W values in a row."""
    # YOUR CODE HERE
    raise NotImplementedError()


def merge_image_features(embeds_BTD: torch.Tensor, input_ids_BT: torch.Tensor, features_ND: torch.Tensor,
                         image_token_id: int) -> torch.Tensor:
    """Early fusion. Return a copy of embeds_BTD where the positions whose token is `<|patch|>`
    (input_ids_BT == image_token_id) hold the image features instead: the first feature row goes to the first
    `<|patch|>` in reading order (batch row 0 left to right, then row 1, …), the second to the second, and so on.
    If the number of `<|patch|>` tokens differs from N, raise a ValueError (never a silent partial merge)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def best_canvas(image_size: tuple[int, int], canvases: list[tuple[int, int]]) -> tuple[int, int]:
    """Which canvas (height, width) in pixels an image of image_size = (height, width) is fitted into.
    For each canvas, the scale that fits the image without distortion is s = min(canvas_h / h, canvas_w / w).
    If some s ≥ 1, take the smallest such s (upscale as little as possible); otherwise take the largest s (downscale
    as little as possible). Among the canvases with that s, return the one with the least area (the first one if
    still tied). Compute s in float32 (e.g. with a torch tensor of the canvases), as the reference does."""
    # YOUR CODE HERE
    raise NotImplementedError()
