"""Rotary position embedding (RoPE) as Llama 4 applies it: complex rotation of *adjacent* pairs.

Each head vector q ∈ R^Dh is read as Dh/2 complex numbers z_i = q[2i] + j·q[2i+1] and rotated by its position p:

    z_i ← z_i · e^{j p ω_i},      ω_i = θ^{-2i/Dh}

(Llama 2/3 in transformers pair dimension i with i + Dh/2 instead, "rotate_half"; Llama 4 checkpoints are stored for
the adjacent-pair convention and give garbage under the other one.)

Scout stretches the long wavelengths with llama3 scaling: frequencies whose wavelength 2π/ω exceeds
`original_max_position_embeddings / low_freq_factor` are divided by `factor`, those shorter than
`original_max_position_embeddings / high_freq_factor` are kept, and the band between is interpolated smoothly.
Scout's current config has low_freq_factor == high_freq_factor, so that band is empty.
"""

import math

import torch


def inverse_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """ω_i for i = 0 … Dh/2-1, float32, with llama3 scaling applied if given."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # θ^(-2i/Dh)
    if scaling is None:
        return inv_freq
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)  # long wavelengths: ω / factor
    if high > low:  # smooth band old_len/high <= wavelength <= old_len/low (empty when low == high)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        scaled = torch.where(medium, blended, scaled)
    return scaled


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """e^{j p ω_i} for each position: complex64 [..., T, Dh/2] (angles in float32, as the reference)."""
    angles = positions[..., None].float() * inv_freq.to(positions.device)  # p · ω_i
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x_BTHD: torch.Tensor, freqs_TP: torch.Tensor) -> torch.Tensor:
    """Rotate each adjacent pair of x by its position's angle. x [B, T, H, Dh], freqs [T, Dh/2] complex.
    Computed in float32 and returned in x's dtype."""
    z_BTHP = torch.view_as_complex(x_BTHD.float().reshape(*x_BTHD.shape[:-1], -1, 2))  # pairs → complex
    return torch.view_as_real(z_BTHP * freqs_TP[:, None, :]).flatten(3).type_as(x_BTHD)  # z · e^{jpω}
