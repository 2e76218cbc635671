"""Chapter 06 cases: patchify, the ViT's 2-D RoPE table, pixel shuffle, the early-fusion merge, the canvas choice.
Expected values come from the package: `minillama4.vision` and `minillama4.image`."""

import torch

from ...image import best_canvas, supported_canvases
from ...vision import merge_image_features, patchify, pixel_shuffle, vision_rope_angles
from .core import Case, Exercise, Mistake, register
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


register(Exercise("patchify", 6, "patchify", _patchify_cases,
                  "reshape to [N, C, G, p, G, p] (grid row, pixel row, grid col, pixel col), permute to "
                  "[N, G, G, C, p, p], reshape to [N, G², C·p·p] — channel first inside each patch"))
register(Exercise("vision_rope_angles", 6, "vision_rope_angles", _rope_cases,
                  "x = i % G (column), y = i // G (row), both +1; first the P x-angles then the P y-angles per row; "
                  "a final row of zeros for the class token; torch.polar(ones, angles)"))
register(Exercise("pixel_shuffle", 6, "pixel_shuffle", _shuffle_cases,
                  "G = √P; view [N, G, G, W] → [N, G, rG, W/r] → permute(0, 2, 1, 3) → reshape [N, rG, rG, W/r²] → "
                  "permute(0, 2, 1, 3) → reshape [N, (rG)², W/r²]; each output token must hold its block's patches in "
                  "the order (row, col, channel): top-left, top-right, bottom-left, bottom-right"))
register(Exercise("merge_image_features", 6, "merge_image_features", _merge_cases,
                  "mask = input_ids == image_token_id; check mask.sum() == len(features) (else ValueError); "
                  "out = embeds.clone(); out[mask] = features (or embeds.masked_scatter(mask[..., None], features))",
                  probe=_merge_probe, mistakes=[
                      Mistake("you changed embeds_BTD in place: clone it first and return the new tensor",
                              test=lambda case, got: got[1] is False),
                      Mistake("a different number of <|patch|> tokens and image features must raise ValueError "
                              "(here it did not)", test=lambda case, got: not all(got[2]))]))
register(Exercise("best_canvas", 6, "best_canvas", _canvas_cases,
                  "s = min(ch / h, cw / w) per canvas (float32); smallest s ≥ 1 if any, else the largest s; then the "
                  "least area among the canvases with exactly that s", exact=True))
