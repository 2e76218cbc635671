"""Chapter 06 cases: patchify, the ViT's 2-D RoPE table, pixel shuffle, the early-fusion merge, the canvas choice.
Expected values come from the package: `minillama4.vision` and `minillama4.image`."""

from functools import partial

import torch

from ...image import best_canvas, supported_canvases
from ...vision import merge_image_features, patchify, pixel_shuffle, vision_rope_angles
from .core import Case, Exercise, Mistake, compare_outputs, register
from .core import seeded as _g


def _patchify_cases():
    cases = []
    for seed, (N, C, S, p) in enumerate([(2, 3, 28, 14), (1, 3, 32, 4), (3, 2, 12, 3), (1, 3, 336, 14)]):
        x = torch.randn(N, C, S, S, generator=_g(seed))
        cases.append(Case((x, p), patchify(x, p)))
    return cases


def _rope_cases():
    return [Case((G, Dh, theta), vision_rope_angles(G, Dh, theta))
            for G, Dh, theta in [(2, 8, 10000.0), (4, 16, 10000.0), (6, 12, 100.0), (24, 88, 10000.0)]]


def _shuffle_cases():
    cases = []
    for seed, (N, G, W, r) in enumerate([(1, 4, 2, 0.5), (2, 8, 6, 0.5), (3, 6, 4, 0.5), (1, 24, 16, 0.5),
                                         (2, 6, 9, 1 / 3)]):
        x = torch.randn(N, G * G, W, generator=_g(10 + seed))
        cases.append(Case((x, r), pixel_shuffle(x, r)))
    return cases


def _merge_inputs(seed, B, T, D, n_patch, patch_id=7):
    g = _g(20 + seed)
    ids = torch.randint(0, 6, (B, T), generator=g)  # never the patch id …
    pos = torch.randperm(B * T, generator=g)[:n_patch]
    ids.view(-1)[pos] = patch_id  # … except at n_patch random places
    return torch.randn(B, T, D, generator=g), ids, torch.randn(n_patch, D, generator=g), patch_id


def _merge_probe(fn, embeds_BTD, input_ids_BT, features_ND, image_token_id):
    """The merged embeddings, whether the input embeddings stayed untouched, and whether a count mismatch between
    <|patch|> tokens and features raised ValueError (one feature too few, one too many)."""
    before = embeds_BTD.clone()
    out = fn(embeds_BTD, input_ids_BT, features_ND, image_token_id)
    untouched = torch.equal(embeds_BTD, before)
    raised = []
    for wrong in (features_ND[:-1], torch.cat([features_ND, features_ND[:1]]))[0 if len(features_ND) else 1:]:
        try:
            fn(before.clone(), input_ids_BT, wrong, image_token_id)
            raised.append(False)
        except ValueError:
            raised.append(True)
    return out, untouched, raised


def _merge_cases():
    cases = []
    for seed, (B, T, D, n) in enumerate([(1, 10, 4, 3), (2, 16, 8, 9), (3, 7, 5, 0), (2, 12, 6, 24)]):
        args = _merge_inputs(seed, B, T, D, n)
        cases.append(Case(args, _merge_probe(merge_image_features, *args)))
    return cases


def _canvas_cases():
    c16, c4 = supported_canvases(16, 336), supported_canvases(4, 224)
    sizes = [((200, 300), c4), ((336, 336), c16), ((100, 80), c16), ((336, 700), c16), ((700, 700), c16),
             ((5000, 5000), c16), ((10000, 100), c16), ((500, 1500), c16), ((1, 1), c4), ((900, 250), c4)]
    return [Case((size, c), best_canvas(size, c)) for size, c in sizes]


def _compare_complex(got, expected):
    """Complex tables compared as (real, imaginary) pairs within the float32 tolerance: cos + j·sin and
    torch.polar may differ in the last bit."""
    if isinstance(got, torch.Tensor) and got.dtype == expected.dtype and got.shape == expected.shape:
        ok, err, msg = compare_outputs(torch.view_as_real(got), torch.view_as_real(expected), False)
        return ok, err, msg + (" (last index: 0 = real part, 1 = imaginary part)" if msg else "")
    return compare_outputs(got, expected, False)


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch06.py holds independently written wrong learner files for each of them.
def _patches(*order):
    """patchify with the axes of [N, C, gy, row, gx, col] put in another order before flattening."""
    def wrong(x, p):
        N, C, H, W = x.shape
        y = x.reshape(N, C, H // p, p, W // p, p).permute(0, *order)
        return y.reshape(N, (H // p) * (W // p), C * p * p)
    return wrong


def _vision_rope(G, Dh, theta, swap_xy=False, cls_first=False, plus_one=1, freq_exp=4, interleave=False):
    P = Dh // 4
    f_P = 1.0 / theta ** (torch.arange(P).float() * freq_exp / Dh)
    i = torch.arange(G * G)
    x, y = (i % G + plus_one).float(), (i // G + plus_one).float()
    if swap_xy:
        x, y = y, x
    ax, ay = x[:, None] * f_P, y[:, None] * f_P
    a = torch.stack([ax, ay], -1).flatten(1) if interleave else torch.cat([ax, ay], -1)
    a = torch.cat([torch.zeros(1, 2 * P), a] if cls_first else [a, torch.zeros(1, 2 * P)])
    return torch.polar(torch.ones_like(a), a)


def _shuffle(order):
    """pixel_shuffle through [N, y', dy, x', dx, W] with the axes in `order` before flattening."""
    def wrong(x, r=0.5):
        N, P, W = x.shape
        k = round(1 / r)
        g = round(P ** 0.5) // k
        y = x.reshape(N, g, k, g, k, W).permute(*order)
        return y.reshape(N, g * g, k * k * W)
    return wrong


def _shuffle_plain_reshape(x, r=0.5):
    N, P, W = x.shape
    return x.reshape(N, round(P * r * r), round(W / r / r))


def _merge_each_row_from_first(embeds, ids, feats, tid):
    mask = ids == tid
    if int(mask.sum()) != len(feats):
        raise ValueError("count")
    out = embeds.clone()
    for b in range(len(ids)):
        out[b, mask[b]] = feats[:int(mask[b].sum())]
    return out


def _merge_added(embeds, ids, feats, tid):
    mask = ids == tid
    if int(mask.sum()) != len(feats):
        raise ValueError("count")
    out = embeds.clone()
    out[mask] += feats
    return out


def _canvas(size, canvases, scale=torch.minimum, target="least upscale", ties="least area", swap_hw=False):
    H, W = size[::-1] if swap_hw else size
    cand = torch.tensor(canvases, dtype=torch.float32)
    s_C = scale(cand[:, 0] / H, cand[:, 1] / W)
    up = s_C[s_C >= 1]
    s = up.min() if len(up) else s_C.min() if target == "most shrink" else s_C.max()
    chosen = [canvases[i] for i in torch.nonzero(s_C == s).flatten().tolist()]
    return chosen[0] if ties == "first" else min(chosen, key=lambda hw: hw[0] * hw[1])


_COUNTS = ("the number of <|patch|> tokens and of image features can differ (the grader tried): compare them "
           "first and raise a ValueError naming both counts")

register(Exercise(
    "patchify", 6, "patchify", _patchify_cases,
    "reshape to [N, C, G, p, G, p] (grid row, pixel row, grid col, pixel col), permute to "
    "[N, G, G, C, p, p], reshape to [N, G², C·p·p] — channel first inside each patch",
    nudge="A reshape never moves data: in which order must the six axes (channel, grid row, pixel row, grid column, "
          "pixel column) be before the final flatten, so that each row of the output is one whole patch?",
    mistakes=[
        Mistake("inside each patch the channel must come first, (channel, row, col): you flattened it channels "
                "last, (row, col, channel)", wrong=_patches(2, 4, 3, 5, 1)),
        Mistake("inside each patch, pixel rows come before pixel columns, (channel, row, col): yours are "
                "column-major", wrong=_patches(2, 4, 1, 5, 3)),
        Mistake("your patches go down the columns first: the grid is row-major, left to right then top to "
                "bottom (grid row before grid column)", wrong=_patches(4, 2, 1, 3, 5)),
        Mistake("a reshape alone does not cut patches: the data is still in (C, H, W) order; permute the axes to "
                "[N, G, G, C, p, p] before flattening", wrong=_patches(1, 2, 3, 4, 5)),
        Mistake("the channel axis is still outside the patches: move it inside, [N, G, G, C, p, p], before "
                "flattening", wrong=_patches(1, 2, 4, 3, 5)),
    ]))
register(Exercise(
    "vision_rope_angles", 6, "vision_rope_angles", _rope_cases,
    "x = i % G (column), y = i // G (row), both +1; first the P x-angles then the P y-angles per row; "
    "a final row of zeros for the class token; torch.polar(ones, angles)",
    nudge="Which patch index gives the column and which the row? Which half of the pairs rotates with which, where "
          "does the class token's row go, and what does it rotate by?",
    compare=_compare_complex, mistakes=[
        Mistake("the class token's row is missing: add a row of angle 0 LAST, [G² + 1, head_dim / 2]",
                test=lambda case, got: got.shape[0] == case.args[0] ** 2),
        Mistake("return unit complex numbers e^{jφ}, complex64: torch.polar(torch.ones_like(angles), angles), "
                "not the angles", test=lambda case, got: not got.is_complex()),
        Mistake("x and y are swapped: the first P pairs rotate with the COLUMN x = i % G, the last P with the row "
                "y = i // G", wrong=partial(_vision_rope, swap_xy=True)),
        Mistake("the class token's row goes LAST (index G²), not first", wrong=partial(_vision_rope, cls_first=True)),
        Mistake("the positions start at 1: the angles are (x + 1)·f_j and (y + 1)·f_j",
                wrong=partial(_vision_rope, plus_one=0)),
        Mistake("those are the text RoPE frequencies: the ViT's P = head_dim / 4 frequencies are "
                "f_j = θ^(−4j / head_dim)", wrong=partial(_vision_rope, freq_exp=2)),
        Mistake("you interleaved the x and y pairs: all P x-pairs come first, then all P y-pairs",
                wrong=partial(_vision_rope, interleave=True)),
    ]))
register(Exercise(
    "pixel_shuffle", 6, "pixel_shuffle", _shuffle_cases,
    "G = √P; view [N, G, G, W] → [N, G, rG, W/r] → permute(0, 2, 1, 3) → reshape [N, rG, rG, W/r²] → "
    "permute(0, 2, 1, 3) → reshape [N, (rG)², W/r²]; each output token must hold its block's patches in "
    "the order (row, col, channel): top-left, top-right, bottom-left, bottom-right",
    nudge="Draw a 4 × 4 grid of numbered patches: which four patches must end up in output token 0, in which "
          "order, and which output token comes after it?",
    mistakes=[
        Mistake("inside each block the patches go down the columns (top-left, bottom-left, …): the order is row "
                "by row, top-left, top-right, bottom-left, bottom-right", wrong=_shuffle((0, 1, 3, 4, 2, 5))),
        Mistake("your output tokens are transposed (column-major over the new grid): swap the spatial axes back "
                "before the final flatten", wrong=_shuffle((0, 3, 1, 2, 4, 5))),
        Mistake("a plain reshape merges neighbours along a row only, not a 2-D block: view and swap the axes as "
                "the recipe says", wrong=_shuffle_plain_reshape),
    ]))
register(Exercise(
    "merge_image_features", 6, "merge_image_features", _merge_cases,
    "mask = input_ids == image_token_id; check mask.sum() == len(features) (else ValueError); "
    "out = embeds.clone(); out[mask] = features (or embeds.masked_scatter(mask[..., None], features))",
    nudge="Which positions get a feature, in what order, and what should happen when there are more (or fewer) "
          "<|patch|> tokens than features? Does the caller's tensor stay as it was?",
    probe=_merge_probe, mistakes=[
        Mistake("you changed embeds_BTD in place: clone it first and return the new tensor",
                test=lambda case, got: got[1] is False),
        Mistake(_COUNTS, test=lambda case, got: not all(got[2])),
        Mistake(_COUNTS, raises=r"shape mismatch|cannot be broadcast|Number of elements of source|out of bounds|"
                                r"must match the size|size of tensor"),
        Mistake("raise ValueError for a count mismatch, not assert (AssertionError, and asserts can be switched "
                "off)", raises=r"^AssertionError"),
        Mistake("each batch row restarted at the first feature: the features continue in reading order across "
                "rows (row 0's <|patch|> tokens, then row 1's, …)", wrong=_merge_each_row_from_first),
        Mistake("you added the features to the <|patch|> embeddings: replace them", wrong=_merge_added),
    ]))
register(Exercise(
    "best_canvas", 6, "best_canvas", _canvas_cases,
    "s = min(ch / h, cw / w) per canvas (float32); smallest s ≥ 1 if any, else the largest s; then the "
    "least area among the canvases with exactly that s", exact=True,
    nudge="For one canvas, which of the two ratios limits the scale? Among the canvases that fit without "
          "shrinking, do you want the most or the least enlargement, and how are ties broken?",
    mistakes=[
        Mistake("you picked the LARGEST upscale: take the smallest s ≥ 1 (upscale as little as possible)",
                wrong=partial(best_canvas, resize_to_max_canvas=True)),
        Mistake("the scale is the MIN of canvas_h / h and canvas_w / w (the limiting side); the max would crop "
                "or distort", wrong=partial(_canvas, scale=torch.maximum)),
        Mistake("height and width are mixed up: image_size and the canvases are both (height, width); "
                "s = min(canvas_h / h, canvas_w / w)", wrong=partial(_canvas, swap_hw=True)),
        Mistake("when no canvas fits without shrinking, take the LARGEST s < 1 (shrink as little as possible), "
                "not the smallest", wrong=partial(_canvas, target="most shrink")),
        Mistake("ties are broken by the least area (least padding): you kept the first canvas with that scale",
                wrong=partial(_canvas, ties="first")),
    ]))
