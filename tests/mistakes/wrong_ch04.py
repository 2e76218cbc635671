"""Chapter 04: wrong versions a learner commonly writes. Each entry: (label, the learner's function, words the
grader's diagnosis must contain). Written the way a learner would, independently of the grader's own versions."""

WRONG = {
    "apply_rope": [
        ("rotate-half", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    freqs = torch.outer(positions_T.float(), inv_freq_P)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = x_BTHD.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x_BTHD.dtype)
''', ["rotate_half", "ADJACENT"]),
        ("adjacent-pairs-with-cat-frequencies", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    freqs = positions_T.float()[:, None] * inv_freq_P[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
    x = x_BTHD.float()
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return (x * cos + rotated * sin).to(x_BTHD.dtype)
''', ["repeat_interleave"]),
        ("rotates-backwards", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    angles = positions_T.float()[:, None] * inv_freq_P.float()
    c, s = torch.cos(angles)[:, None, :], torch.sin(angles)[:, None, :]
    x = x_BTHD.float()
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.stack([a * c + b * s, b * c - a * s], dim=-1)
    return out.flatten(-2).to(x_BTHD.dtype)
''', [r"−p·ω"]),
        ("imaginary-part-first", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    angles = positions_T[:, None].float() * inv_freq_P[None, :]
    rot = torch.polar(torch.ones_like(angles), angles)[:, None, :]
    x = x_BTHD.float()
    z = torch.complex(x[..., 1::2], x[..., 0::2]) * rot
    return torch.stack([z.imag, z.real], dim=-1).flatten(3).to(x_BTHD.dtype)
''', [r"−p·ω"]),
        ("ignores-positions", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    T = x_BTHD.shape[1]
    angles = torch.arange(T).float()[:, None] * inv_freq_P[None, :]
    rot = torch.polar(torch.ones_like(angles), angles)
    z = torch.view_as_complex(x_BTHD.float().reshape(*x_BTHD.shape[:-1], -1, 2))
    return torch.view_as_real(z * rot[:, None, :]).flatten(3).to(x_BTHD.dtype)
''', ["positions you are given"]),
        ("not-cast-back", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    angles = positions_T[:, None].float() * inv_freq_P[None, :]
    rot = torch.polar(torch.ones_like(angles), angles)
    z = torch.view_as_complex(x_BTHD.float().reshape(*x_BTHD.shape[:-1], -1, 2))
    return torch.view_as_real(z * rot[:, None, :]).flatten(3)
''', ["x's dtype"]),
        ("angles-in-float64", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    angles = positions_T.double()[:, None] * inv_freq_P.double()[None, :]
    cos, sin = torch.cos(angles)[:, None, :], torch.sin(angles)[:, None, :]
    x = x_BTHD.double()
    even, odd = x[..., ::2], x[..., 1::2]
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return out.to(x_BTHD.dtype)
''', ["float64"]),
        ("rotation-in-bfloat16", '''
def apply_rope(x_BTHD, positions_T, inv_freq_P):
    angles = positions_T.float()[:, None] * inv_freq_P[None, :]
    c = angles.cos().repeat_interleave(2, dim=-1)[:, None, :].to(x_BTHD.dtype)
    s = angles.sin().repeat_interleave(2, dim=-1)[:, None, :].to(x_BTHD.dtype)
    rotated = torch.stack([-x_BTHD[..., 1::2], x_BTHD[..., 0::2]], dim=-1).flatten(-2)
    return x_BTHD * c + rotated * s
''', ["bfloat16 rounding"]),
    ],
    "llama3_inverse_frequencies": [
        ("divides-by-zero", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    L = original_max_position_embeddings
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = (L / wavelen - low_freq_factor) * (1.0 / (high_freq_factor - low_freq_factor))
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > L / low_freq_factor, inv_freq / factor, inv_freq)
    band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
    return torch.where(band, blended, out)
''', ["high − low = 0"]),
        ("nan-through-a-mask-product", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    L = original_max_position_embeddings
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    wavelen = 2 * math.pi / inv_freq
    long_ = (wavelen > L / low_freq_factor).float()
    band = ((wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)).float()
    s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - s) * inv_freq / factor + s * inv_freq
    plain = (1 - long_) * inv_freq + long_ * inv_freq / factor
    return band * blended + (1 - band) * plain
''', ["high − low = 0"]),
        ("no-scaling-when-low-equals-high", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if low_freq_factor == high_freq_factor:
        return inv_freq
    L = original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > L / low_freq_factor, inv_freq / factor, inv_freq)
    s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
    return torch.where(band, (1 - s) * inv_freq / factor + s * inv_freq, out)
''', ["still scaling"]),
        ("exponent-i-over-dh", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    inv_freq = theta ** (-torch.arange(head_dim // 2, dtype=torch.float32) / head_dim)
    L = original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > L / low_freq_factor, inv_freq / factor, inv_freq)
    if high_freq_factor > low_freq_factor:
        s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
        out = torch.where(band, (1 - s) * inv_freq / factor + s * inv_freq, out)
    return out
''', [r"arange\(0, Dh, 2\)"]),
        ("wavelength-without-2pi", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    L = original_max_position_embeddings
    wavelen = 1.0 / inv_freq
    out = torch.where(wavelen > L / low_freq_factor, inv_freq / factor, inv_freq)
    if high_freq_factor > low_freq_factor:
        s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
        out = torch.where(band, (1 - s) * inv_freq / factor + s * inv_freq, out)
    return out
''', ["2π/ω"]),
        ("short-wavelengths-slowed", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    L = original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen < L / high_freq_factor, inv_freq / factor, inv_freq)
    if high_freq_factor > low_freq_factor:
        s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
        out = torch.where(band, (1 - s) * inv_freq / factor + s * inv_freq, out)
    return out
''', ["LONG wavelengths"]),
        ("blend-reversed", '''
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    L = original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > L / low_freq_factor, inv_freq / factor, inv_freq)
    if high_freq_factor > low_freq_factor:
        s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        band = (wavelen >= L / high_freq_factor) & (wavelen <= L / low_freq_factor)
        out = torch.where(band, s * inv_freq / factor + (1 - s) * inv_freq, out)
    return out
''', ["blend is reversed"]),
    ],
    "chunked_causal_mask": [
        ("sliding-window", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    diff = q_pos[:, None] - k_pos[None, :]
    allowed = diff >= 0
    if chunk_size is not None:
        allowed = allowed & (diff < chunk_size)
    return allowed
''', ["sliding window", "FIXED"]),
        ("sliding-window-one-too-wide", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    diff = q_pos.unsqueeze(1) - k_pos.unsqueeze(0)
    if chunk_size is None:
        return diff >= 0
    return (diff >= 0) & (diff <= chunk_size)
''', ["sliding window"]),
        ("no-self-attention", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    mask = k_pos[None, :] < q_pos[:, None]
    if chunk_size is not None:
        mask &= (k_pos[None, :] // chunk_size) == (q_pos[:, None] // chunk_size)
    return mask
''', ["own position"]),
        ("chunks-off-by-one", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    mask = k_pos[None, :] <= q_pos[:, None]
    if chunk_size is not None:
        mask = mask & ((k_pos[None, :] + 1) // chunk_size == (q_pos[:, None] + 1) // chunk_size)
    return mask
''', ["off by one"]),
        ("not-causal-inside-chunks", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    if chunk_size is None:
        return k_pos[None, :] <= q_pos[:, None]
    return (k_pos[None, :] // chunk_size) == (q_pos[:, None] // chunk_size)
''', ["still causal"]),
        ("keys-as-rows", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    mask = q_pos[None, :] >= k_pos[:, None]
    if chunk_size is not None:
        mask = mask & (q_pos[None, :] // chunk_size == k_pos[:, None] // chunk_size)
    return mask
''', ["rows are queries"]),
        ("row-and-column-indices", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    i = torch.arange(len(q_pos))[:, None]
    j = torch.arange(len(k_pos))[None, :]
    mask = j <= i
    if chunk_size is not None:
        mask = mask & (i // chunk_size == j // chunk_size)
    return mask
''', ["absolute positions"]),
        ("chunk-size-none-not-handled", '''
def chunked_causal_mask(q_pos, k_pos, chunk_size):
    causal = k_pos[None, :] <= q_pos[:, None]
    same_chunk = (k_pos[None, :] // chunk_size) == (q_pos[:, None] // chunk_size)
    return causal & same_chunk
''', ["None"]),
    ],
    "temperature_scale": [
        ("no-plus-one", '''
def temperature_scale(positions, floor_scale, attn_scale):
    return 1 + attn_scale * torch.log(torch.floor(positions.float() / floor_scale) + 1)
''', [r"\+1 goes inside the floor"]),
        ("integer-division-without-plus-one", '''
def temperature_scale(positions, floor_scale, attn_scale):
    steps = (positions // floor_scale).float()
    return 1.0 + attn_scale * torch.log1p(steps)
''', [r"\+1 goes inside the floor"]),
        ("log-of-zero", '''
def temperature_scale(positions, floor_scale, attn_scale):
    steps = torch.floor((positions + 1) / floor_scale)
    return 1 + attn_scale * torch.log(steps)
''', ["ln 0"]),
        ("float64", '''
def temperature_scale(positions, floor_scale, attn_scale):
    p = positions.to(torch.float64)
    return 1 + attn_scale * torch.log1p(torch.floor((p + 1) / floor_scale))
''', ["float32"]),
        ("no-one-plus", '''
def temperature_scale(positions, floor_scale, attn_scale):
    return attn_scale * torch.log1p(torch.floor((positions.float() + 1) / floor_scale))
''', ["without the 1"]),
    ],
    "gqa_attention": [
        ("repeat-not-interleave", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    n_rep = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat(1, n_rep, 1, 1)
    v = v_BKSD.repeat(1, n_rep, 1, 1)
    att = q_BHTD @ k.transpose(-2, -1) / math.sqrt(q_BHTD.shape[-1])
    att = att.masked_fill(~mask_TS, float("-inf")).softmax(dim=-1)
    return att @ v
''', ["repeat_interleave", "h % K"]),
        ("no-expansion", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    att = q_BHTD @ k_BKSD.transpose(-2, -1) / math.sqrt(q_BHTD.shape[-1])
    att = att.masked_fill(~mask_TS, float("-inf")).softmax(dim=-1)
    return att @ v_BKSD
''', ["only K heads"]),
        ("no-scale", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = torch.matmul(q_BHTD, k.transpose(2, 3))
    att = att.masked_fill(~mask_TS, float("-inf"))
    return torch.softmax(att, dim=-1) @ v
''', [r"1/√Dh before"]),
        ("scaled-by-dh", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = q_BHTD @ k.transpose(-1, -2) / q_BHTD.shape[-1]
    return att.masked_fill(~mask_TS, float("-inf")).softmax(-1) @ v
''', ["not 1/Dh"]),
        ("mask-inverted", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = q_BHTD @ k.transpose(-1, -2) / math.sqrt(q_BHTD.shape[-1])
    att = att.masked_fill(mask_TS, float("-inf"))
    return att.softmax(-1) @ v
''', ["ALLOWED"]),
        ("masked-with-zero", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = q_BHTD @ k.transpose(-1, -2) / math.sqrt(q_BHTD.shape[-1])
    att = torch.where(mask_TS, att, torch.zeros_like(att))
    return att.softmax(-1) @ v
''', ["e⁰"]),
        ("boolean-mask-added", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = q_BHTD @ k.transpose(-1, -2) / math.sqrt(q_BHTD.shape[-1]) + mask_TS
    return att.softmax(-1) @ v
''', ["blocks nothing"]),
        ("softmax-over-queries", '''
def gqa_attention(q_BHTD, k_BKSD, v_BKSD, mask_TS):
    g = q_BHTD.shape[1] // k_BKSD.shape[1]
    k = k_BKSD.repeat_interleave(g, dim=1)
    v = v_BKSD.repeat_interleave(g, dim=1)
    att = q_BHTD @ k.transpose(-1, -2) / math.sqrt(q_BHTD.shape[-1])
    att = att.masked_fill(~mask_TS, float("-inf"))
    return att.softmax(dim=2) @ v
''', ["over the keys"]),
    ],
}
