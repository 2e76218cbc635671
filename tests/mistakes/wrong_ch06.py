"""Chapter 06: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "patchify": [
        ("channels-last", '''
def patchify(pixels_NCHW, patch_size):
    p = patch_size
    x = pixels_NCHW.permute(0, 2, 3, 1)  # N, H, W, C
    N, H, W, C = x.shape
    x = x.reshape(N, H // p, p, W // p, p, C).transpose(2, 3)  # N, gy, gx, row, col, C
    return x.reshape(N, -1, p * p * C)
''', ["channels last", "channel must come first"]),
        ("col-major-in-patch", '''
def patchify(pixels_NCHW, patch_size):
    N, C, H, W = pixels_NCHW.shape
    p = patch_size
    t = pixels_NCHW.view(N, C, H // p, p, W // p, p)
    t = t.permute(0, 2, 4, 1, 5, 3).contiguous()  # N, gy, gx, C, col, row
    return t.view(N, (H // p) * (W // p), C * p * p)
''', ["rows come before pixel columns"]),
        ("grid-column-major", '''
def patchify(pixels_NCHW, patch_size):
    N, C, H, W = pixels_NCHW.shape
    p = patch_size
    patches = [pixels_NCHW[:, :, i:i + p, j:j + p].reshape(N, -1)
               for j in range(0, W, p) for i in range(0, H, p)]
    return torch.stack(patches, dim=1)
''', ["row-major", "grid row before grid column"]),
        ("plain-reshape", '''
def patchify(pixels_NCHW, patch_size):
    N, C, H, W = pixels_NCHW.shape
    return pixels_NCHW.reshape(N, (H // patch_size) * (W // patch_size), C * patch_size * patch_size)
''', ["reshape alone does not cut patches"]),
        ("channel-outside", '''
def patchify(pixels_NCHW, patch_size):
    N, C, H, W = pixels_NCHW.shape
    x = pixels_NCHW.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # N, C, gy, gx, p, p
    return x.reshape(N, -1, C * patch_size * patch_size)
''', ["channel axis is still outside"]),
    ],
    "vision_rope_angles": [
        ("no-class-token", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    f = theta ** (-4 * torch.arange(P, dtype=torch.float32) / head_dim)
    i = torch.arange(grid_size ** 2)
    ang = torch.cat([((i % grid_size) + 1).float()[:, None] * f, ((i // grid_size) + 1).float()[:, None] * f], 1)
    return torch.polar(torch.ones_like(ang), ang)
''', ["class token's row is missing", "LAST"]),
        ("angles-not-complex", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    f = theta ** (-4 * torch.arange(P, dtype=torch.float32) / head_dim)
    i = torch.arange(grid_size ** 2)
    ang = torch.cat([((i % grid_size) + 1).float()[:, None] * f, ((i // grid_size) + 1).float()[:, None] * f], 1)
    return torch.cat([ang, torch.zeros(1, 2 * P)])
''', ["complex", "polar"]),
        ("x-y-swapped", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(P).float() * 4 / head_dim)
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    first, second = rows.flatten() + 1, cols.flatten() + 1
    ang = torch.cat([torch.outer(first.float(), freqs), torch.outer(second.float(), freqs)], dim=1)
    ang = torch.cat([ang, ang.new_zeros(1, 2 * P)])
    return torch.polar(torch.ones_like(ang), ang)
''', ["swapped", "COLUMN"]),
        ("class-token-first", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(P).float() * 4 / head_dim)
    idx = torch.arange(grid_size * grid_size)
    ang = torch.cat([torch.outer((idx % grid_size + 1).float(), freqs),
                     torch.outer((idx // grid_size + 1).float(), freqs)], dim=1)
    ang = torch.cat([torch.zeros(1, 2 * P), ang])
    return torch.polar(torch.ones_like(ang), ang)
''', ["LAST", "not first"]),
        ("no-plus-one", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(P).float() * 4 / head_dim)
    idx = torch.arange(grid_size * grid_size)
    ang = torch.cat([torch.outer((idx % grid_size).float(), freqs),
                     torch.outer((idx // grid_size).float(), freqs)], dim=1)
    ang = torch.cat([ang, torch.zeros(1, 2 * P)])
    return torch.polar(torch.ones_like(ang), ang)
''', [r"start at 1", r"\(x \+ 1\)"]),
        ("text-rope-frequencies", '''
def vision_rope_angles(grid_size, head_dim, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    f = inv_freq[: head_dim // 4]
    idx = torch.arange(grid_size * grid_size)
    ang = torch.cat([torch.outer((idx % grid_size + 1).float(), f), torch.outer((idx // grid_size + 1).float(), f)], 1)
    ang = torch.cat([ang, torch.zeros(1, head_dim // 2)])
    return torch.polar(torch.ones_like(ang), ang)
''', ["text RoPE frequencies"]),
        ("x-y-interleaved", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(P).float() * 4 / head_dim)
    idx = torch.arange(grid_size * grid_size)
    x = (idx % grid_size + 1).float()[:, None] * freqs
    y = (idx // grid_size + 1).float()[:, None] * freqs
    ang = torch.zeros(grid_size * grid_size + 1, 2 * P)
    ang[:-1, 0::2] = x
    ang[:-1, 1::2] = y
    return torch.polar(torch.ones_like(ang), ang)
''', ["interleaved"]),
    ],
    "pixel_shuffle": [
        ("block-column-major", '''
def pixel_shuffle(x_NPW, ratio=0.5):
    N, P, W = x_NPW.shape
    G = int(P ** 0.5)
    k = int(round(1 / ratio))
    g = G // k
    x = x_NPW.view(N, g, k, g, k, W)  # N, y', dy, x', dx, W
    x = x.permute(0, 1, 3, 4, 2, 5)  # N, y', x', dx, dy, W
    return x.reshape(N, g * g, k * k * W)
''', ["down the columns", "row by row"]),
        ("no-swap-back", '''
def pixel_shuffle(x_NPW, ratio=0.5):
    N, P, W = x_NPW.shape
    G = round(P ** 0.5)
    g = round(G * ratio)
    x = x_NPW.reshape(N, G, g, round(W / ratio))
    x = x.permute(0, 2, 1, 3).reshape(N, g, g, round(W / ratio ** 2))
    return x.reshape(N, g * g, -1)
''', ["transposed", "swap the spatial axes back"]),
        ("plain-reshape", '''
def pixel_shuffle(x_NPW, ratio=0.5):
    N, P, W = x_NPW.shape
    return x_NPW.reshape(N, int(P * ratio * ratio), -1)
''', ["plain reshape"]),
    ],
    "merge_image_features": [
        ("in-place", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    mask = input_ids_BT == image_token_id
    if mask.sum().item() != len(features_ND):
        raise ValueError("count mismatch")
    embeds_BTD[mask] = features_ND
    return embeds_BTD
''', ["in place", "clone"]),
        ("no-count-check-zip", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    out = embeds_BTD.clone()
    for (b, t), f in zip((input_ids_BT == image_token_id).nonzero().tolist(), features_ND):
        out[b, t] = f
    return out
''', ["ValueError", "counts"]),
        ("no-count-check-index", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    out = embeds_BTD.clone()
    out[input_ids_BT == image_token_id] = features_ND
    return out
''', ["ValueError", "counts"]),
        ("assert", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    mask = input_ids_BT == image_token_id
    assert int(mask.sum()) == features_ND.shape[0], "wrong number of image features"
    return embeds_BTD.masked_scatter(mask.unsqueeze(-1), features_ND)
''', ["not assert"]),
        ("each-row-from-first", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    if int((input_ids_BT == image_token_id).sum()) != len(features_ND):
        raise ValueError("count mismatch")
    out = embeds_BTD.clone()
    for b in range(out.shape[0]):
        k = 0
        for t in range(out.shape[1]):
            if input_ids_BT[b, t] == image_token_id:
                out[b, t] = features_ND[k]
                k += 1
    return out
''', ["restarted", "reading order"]),
        ("added", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    mask = (input_ids_BT == image_token_id)
    if int(mask.sum()) != len(features_ND):
        raise ValueError("count mismatch")
    scattered = torch.zeros_like(embeds_BTD).masked_scatter(mask[..., None], features_ND)
    return embeds_BTD + scattered
''', ["added", "replace"]),
    ],
    "best_canvas": [
        ("largest-upscale", '''
def best_canvas(image_size, canvases):
    H, W = image_size
    s = torch.tensor([min(ch / H, cw / W) for ch, cw in canvases], dtype=torch.float32)
    target = s.max()
    ties = [c for c, v in zip(canvases, s.tolist()) if v == target.item()]
    return min(ties, key=lambda c: c[0] * c[1])
''', ["LARGEST upscale"]),
        ("max-of-ratios", '''
def best_canvas(image_size, canvases):
    H, W = image_size
    c = torch.tensor(canvases, dtype=torch.float32)
    s = torch.max(c[:, 0] / H, c[:, 1] / W)
    fits = s[s >= 1]
    best = fits.min() if fits.numel() else s.max()
    idx = (s == best).nonzero().flatten().tolist()
    return min((canvases[i] for i in idx), key=lambda hw: hw[0] * hw[1])
''', ["MIN", "limiting side"]),
        ("height-width-mixed", '''
def best_canvas(image_size, canvases):
    W, H = image_size
    c = torch.tensor(canvases, dtype=torch.float32)
    s = torch.min(c[:, 0] / H, c[:, 1] / W)
    fits = s[s >= 1]
    best = fits.min() if fits.numel() else s.max()
    idx = (s == best).nonzero().flatten().tolist()
    return min((canvases[i] for i in idx), key=lambda hw: hw[0] * hw[1])
''', ["height and width are mixed up"]),
        ("most-shrink", '''
def best_canvas(image_size, canvases):
    H, W = image_size
    c = torch.tensor(canvases, dtype=torch.float32)
    s = torch.min(c[:, 0] / H, c[:, 1] / W)
    best = s[s >= 1].min() if (s >= 1).any() else s.min()
    idx = (s == best).nonzero().flatten().tolist()
    return min((canvases[i] for i in idx), key=lambda hw: hw[0] * hw[1])
''', ["LARGEST s < 1"]),
        ("first-of-ties", '''
def best_canvas(image_size, canvases):
    H, W = image_size
    c = torch.tensor(canvases, dtype=torch.float32)
    s = torch.min(c[:, 0] / H, c[:, 1] / W)
    best = s[s >= 1].min() if (s >= 1).any() else s.max()
    return canvases[int((s == best).nonzero()[0])]
''', ["least area"]),
    ],
}

RIGHT = {
    "patchify": [("F.unfold", '''
def patchify(pixels_NCHW, patch_size):
    return torch.nn.functional.unfold(pixels_NCHW, patch_size, stride=patch_size).transpose(1, 2)
''')],
    "vision_rope_angles": [("cos-sin-meshgrid", '''
def vision_rope_angles(grid_size, head_dim, theta):
    P = head_dim // 4
    f = theta ** (-4.0 * torch.arange(P, dtype=torch.float32) / head_dim)
    y, x = torch.meshgrid(torch.arange(1, grid_size + 1), torch.arange(1, grid_size + 1), indexing="ij")
    ang = torch.cat([x.reshape(-1, 1) * f, y.reshape(-1, 1) * f], dim=1).float()
    ang = torch.cat([ang, torch.zeros(1, 2 * P)])
    return torch.complex(torch.cos(ang), torch.sin(ang))
''')],
    "pixel_shuffle": [("six-axis-permute", '''
def pixel_shuffle(x_NPW, ratio=0.5):
    N, P, W = x_NPW.shape
    k = round(1 / ratio)
    g = round(P ** 0.5) // k
    blocks = x_NPW.reshape(N, g, k, g, k, W).permute(0, 1, 3, 2, 4, 5)  # N, y', x', dy, dx, W
    return blocks.reshape(N, g * g, k * k * W)
'''), ("loop-over-blocks", '''
def pixel_shuffle(x_NPW, ratio=0.5):
    N, P, W = x_NPW.shape
    G = round(P ** 0.5)
    k = round(1 / ratio)
    grid = x_NPW.reshape(N, G, G, W)
    tokens = [torch.cat([grid[:, y + dy, x + dx] for dy in range(k) for dx in range(k)], dim=-1)
              for y in range(0, G, k) for x in range(0, G, k)]
    return torch.stack(tokens, dim=1)
''')],
    "merge_image_features": [("loop", '''
def merge_image_features(embeds_BTD, input_ids_BT, features_ND, image_token_id):
    where = (input_ids_BT == image_token_id).nonzero().tolist()
    if len(where) != features_ND.shape[0]:
        raise ValueError(f"{len(where)} <|patch|> tokens but {features_ND.shape[0]} features")
    out = embeds_BTD.clone()
    for k, (b, t) in enumerate(where):
        out[b, t] = features_ND[k]
    return out
''')],
    "best_canvas": [("python-floats", '''
def best_canvas(image_size, canvases):
    H, W = image_size
    scales = [min(ch / H, cw / W) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    target = min(up) if up else max(scales)
    return min((c for c, s in zip(canvases, scales) if s == target), key=lambda c: c[0] * c[1])
''')],
}
