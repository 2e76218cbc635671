"""The Llama 4 vision path: a ViT turns each square tile into text-space embeddings, one per `<|patch|>` token.

Per tile of S×S pixels (Scout / Maverick: S = 336, patch p = 14, so a 24×24 grid of G² = 576 patches):

    1. patchify     unfold into G² patches of C·p·p values (channel, row, col), row-major; linear, no bias
    2. class token  one learned vector appended LAST (index G²)                    → G² + 1 tokens
    3. position     + a learned absolute embedding per token (the class token's row is the last one)
    4. LayerNorm    layernorm_pre
    5. ViT layers   h += Attn(LN₁(h)); h += MLP(LN₂(h))   (biases everywhere, bidirectional attention,
                    2-D RoPE on q and k: the first half of the pairs rotate with the column x, the second half with
                    the row y; the class token is not rotated)
    6. LayerNorm    layernorm_post, then drop the class token                      → G² tokens of width W
    7. pixel shuffle (ratio r = 0.5): each 2×2 block of neighbouring patches becomes one token of width W/r²
                                                                                   → (rG)² = 144 tokens
    8. adapter      fc1 → GELU → fc2 → GELU (no biases)
    9. projector    linear to the text width D, no bias, no activation (`multi_modal_projector.linear_1`)

Parameter names equal the Hugging Face checkpoint keys under `vision_model.` and `multi_modal_projector.`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


# vision_config keys with no safe default (without them the vision tensors' shapes are unknown)
REQUIRED_HF_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                    "patch_size", "vision_output_dim", "projector_input_dim", "projector_output_dim")


@dataclass
class VisionConfig:
    hidden_size: int = 1408  # W: width of the ViT's residual stream
    num_hidden_layers: int = 34  # ViT layers
    num_attention_heads: int = 16  # heads per ViT layer (head width W / heads = 88)
    intermediate_size: int = 5632  # hidden width of each ViT MLP; also the adapter's input width W / r² (HF wiring)
    image_size: int = 336  # S: side of one square tile in pixels
    patch_size: int = 14  # p: side of one square patch in pixels
    num_channels: int = 3  # C: colour channels (RGB)
    norm_eps: float = 1e-5  # epsilon of every LayerNorm
    rope_theta: float = 10000.0  # base wavelength of the 2-D RoPE
    pixel_shuffle_ratio: float = 0.5  # r: the patch grid shrinks by r per side, the width grows by 1 / r²
    projector_input_dim: int = 4096  # output width of the adapter's fc1
    projector_output_dim: int = 4096  # width of the adapter's fc2 (input and output)
    vision_output_dim: int = 4096  # width the multimodal projector reads (= projector_output_dim)
    initializer_range: float = 0.02  # std of the normal init of every weight matrix

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes the vision model impossible to build."""

        def bad(msg: str) -> None:
            raise ValueError(f"invalid VisionConfig: {msg}")

        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                     "patch_size", "num_channels", "projector_input_dim", "projector_output_dim", "vision_output_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(f"{name} must be a positive int, got {v!r}")
        for name in ("norm_eps", "rope_theta", "pixel_shuffle_ratio", "initializer_range"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                bad(f"{name} must be a finite number, got {v!r}")
        if self.image_size % self.patch_size:
            bad(f"patch_size={self.patch_size} must divide image_size={self.image_size}")
        if self.hidden_size % self.num_attention_heads:
            bad(f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}")
        if self.head_dim % 4:
            bad(f"head width hidden_size / num_attention_heads = {self.head_dim} must be a multiple of 4 "
                "(the 2-D RoPE rotates half of the pairs by x and half by y)")
        r = self.pixel_shuffle_ratio
        inv = round(1 / r) if r > 0 else 0
        if not 0 < r <= 1 or abs(1 / r - inv) > 1e-9:
            bad(f"pixel_shuffle_ratio must be 1/n for an integer n >= 1, got {r!r}")
        if self.grid_size % inv:
            bad(f"the patch grid ({self.grid_size}×{self.grid_size}) must be divisible by 1/pixel_shuffle_ratio = {inv}")
        if self.intermediate_size != self.hidden_size * inv * inv:
            bad(f"intermediate_size={self.intermediate_size} must equal hidden_size / pixel_shuffle_ratio² = "
                f"{self.hidden_size * inv * inv}: the adapter reads pixel-shuffled tokens with intermediate_size inputs")
        if self.projector_input_dim != self.projector_output_dim:
            bad(f"projector_input_dim={self.projector_input_dim} must equal projector_output_dim="
                f"{self.projector_output_dim} (the adapter's fc1 output is fc2's input)")
        if self.vision_output_dim != self.projector_output_dim:
            bad(f"vision_output_dim={self.vision_output_dim} must equal projector_output_dim="
                f"{self.projector_output_dim} (the projector reads the adapter's output)")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            bad(f"norm_eps and rope_theta must be > 0, got {self.norm_eps}, {self.rope_theta}")

    # ----------------------------------------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """G: patches per side of a tile."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_tile(self) -> int:
        """(r·G)²: the `<|patch|>` tokens one tile becomes (144 for Llama 4)."""
        return round(self.grid_size * self.pixel_shuffle_ratio) ** 2

    def num_parameters(self, text_hidden_size: int) -> int:
        """Parameters of the vision model plus the projector to a text width of text_hidden_size."""
        W, I, G2 = self.hidden_size, self.intermediate_size, self.grid_size ** 2
        layer = 4 * (W * W + W) + (W * I + I) + (I * W + W) + 4 * W  # q k v o, fc1, fc2, two LayerNorms
        return (self.num_channels * self.patch_size ** 2 * W + W + (G2 + 1) * W + 4 * W
                + self.num_hidden_layers * layer + I * self.projector_input_dim
                + self.projector_input_dim * self.projector_output_dim + self.vision_output_dim * text_hidden_size)

    # ----------------------------------------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "VisionConfig":
        """Read the `vision_config` dict of a Llama4ForConditionalGeneration `config.json`."""
        if not isinstance(hf, dict):
            raise ValueError(f"expected a vision_config dict, got {type(hf).__name__}")
        mt = hf.get("model_type", "llama4_vision_model")
        if mt != "llama4_vision_model":
            raise ValueError(f"vision_config has model_type {mt!r}; expected 'llama4_vision_model'")
        for name in ("image_size", "patch_size"):
            if isinstance(hf.get(name), (list, tuple)):
                h, w = hf[name]
                if h != w:
                    raise ValueError(f"vision_config.{name}={hf[name]!r}: only square tiles and patches are supported")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"vision_config.hidden_act={hf['hidden_act']!r}: Llama 4's ViT uses exact (erf) 'gelu'")
        if hf.get("multi_modal_projector_bias"):
            raise ValueError("vision_config.multi_modal_projector_bias=true: Llama 4's projector has no bias")
        if hf.get("vision_feature_layer", -1) != -1:
            raise ValueError(f"vision_config.vision_feature_layer={hf['vision_feature_layer']}: only -1 (the last "
                             "layer) is what Llama 4 uses")
        missing = [k for k in REQUIRED_HF_KEYS if hf.get(k) is None]
        if missing:
            raise ValueError(f"vision_config lacks {', '.join(missing)}: the vision model's shapes cannot be known "
                             "without it")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in hf.items() if k in known}
        rope = hf.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise ValueError(f"vision_config.rope_parameters must be a dict, got {rope!r}")
        kw["rope_theta"] = rope.get("rope_theta", hf.get("rope_theta", cls.rope_theta))
        if isinstance(kw["rope_theta"], int) and not isinstance(kw["rope_theta"], bool):
            kw["rope_theta"] = float(kw["rope_theta"])
        return cls(**kw)

    def to_hf(self) -> dict[str, Any]:
        """The `vision_config` dict transformers' Llama4VisionConfig reads."""
        d = dataclasses.asdict(self)
        theta = d.pop("rope_theta")
        d.update(model_type="llama4_vision_model", hidden_act="gelu", rope_parameters={"rope_type": "default",
                 "rope_theta": theta}, multi_modal_projector_bias=False, vision_feature_select_strategy="default",
                 vision_feature_layer=-1, projector_dropout=0.0, attention_dropout=0.0)
        return d


# ------------------------------------------------------------------------------------------------- the steps
def patchify(pixels_NCHW: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[N, C, S, S] → [N, G², C·p·p]: non-overlapping p×p patches, row-major over the grid, each flattened as
    (channel, row, col), which is what `nn.Unfold(p, stride=p)` gives."""
    N, C, H, W = pixels_NCHW.shape
    p = patch_size
    x = pixels_NCHW.reshape(N, C, H // p, p, W // p, p)  # [N, C, gy, row, gx, col]
    return x.permute(0, 2, 4, 1, 3, 5).reshape(N, (H // p) * (W // p), C * p * p)  # [N, gy·gx, (C, row, col)]


def vision_rope_angles(grid_size: int, head_dim: int, theta: float) -> torch.Tensor:
    """The 2-D RoPE rotations: complex64 [G² + 1, head_dim / 2], one row per token (patches row-major, class token
    last). With P = head_dim / 4 base frequencies f_j = 1 / θ^(4j / head_dim), j = 0 … P-1:
        pair j       rotates by (x + 1)·f_j        x = column of the patch
        pair P + j   rotates by (y + 1)·f_j        y = row of the patch
    and the class token by 0 (identity)."""
    P = head_dim // 4
    f_P = 1.0 / theta ** (torch.arange(0, 2 * P, 2)[:P].float() / (head_dim // 2))  # θ^(-2j / (Dh/2))
    idx = torch.arange(grid_size * grid_size)
    x, y = idx % grid_size, idx // grid_size  # column, row
    angles = torch.cat([(x + 1)[:, None].float() * f_P, (y + 1)[:, None].float() * f_P], dim=-1)  # [G², 2P]
    angles = torch.cat([angles, torch.zeros(1, 2 * P)])  # class token: no rotation
    return torch.polar(torch.ones_like(angles), angles)


def pixel_shuffle(x_NPW: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """[N, G², W] → [N, (rG)², W / r²]: trade spatial resolution for width, in Llama 4's exact order
    (view → swap the spatial axes → view → swap back). The effect: output token (y', x') is the concatenation of the
    1/r × 1/r block of patches it covers, row by row (top-left, top-right, bottom-left, bottom-right for r = 0.5)."""
    N, P, W = x_NPW.shape
    G = round(P ** 0.5)
    if G * G != P:
        raise ValueError(f"pixel_shuffle needs a square grid of patches, got {P} tokens")
    x = x_NPW.reshape(N, G, G, W)  # [N, y, x, W]
    x = x.reshape(N, G, round(G * ratio), round(W / ratio))  # merge 1/r neighbours along x into the width
    x = x.permute(0, 2, 1, 3)  # [N, x', y, W/r]
    x = x.reshape(N, round(G * ratio), round(G * ratio), round(W / ratio ** 2))  # merge 1/r neighbours along y
    x = x.permute(0, 2, 1, 3)  # back to [N, y', x', W/r²]
    return x.reshape(N, -1, x.shape[-1])


def merge_image_features(embeds_BTD: torch.Tensor, input_ids_BT: torch.Tensor, features_ND: torch.Tensor,
                         image_token_id: int) -> torch.Tensor:
    """Early fusion: the embeddings at the `<|patch|>` positions (input_ids == image_token_id), in reading order
    (row by row of the batch, left to right), replaced by the image features [N, D], in order. Everything else is
    kept. The number of `<|patch|>` tokens must equal N."""
    mask_BT = input_ids_BT == image_token_id
    n = int(mask_BT.sum())
    if n != features_ND.shape[0]:
        raise ValueError(f"the prompt has {n} <|patch|> tokens (id {image_token_id}) but the images give "
                         f"{features_ND.shape[0]} features: each tile needs exactly its tokens_per_tile <|patch|> "
                         "tokens (see minillama4.image.image_prompt)")
    return embeds_BTD.masked_scatter(mask_BT[..., None], features_ND.to(embeds_BTD.dtype))  # h·(1−m) + img·m


# ------------------------------------------------------------------------------------------------- the modules
class PatchEmbedding(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.patch_size = c.patch_size
        self.linear = nn.Linear(c.num_channels * c.patch_size ** 2, c.hidden_size, bias=False)  # [W, C·p·p]

    def forward(self, pixels_NCHW: torch.Tensor) -> torch.Tensor:
        return self.linear(patchify(pixels_NCHW, self.patch_size))  # [N, G², W]


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.n_heads, self.head_dim = c.num_attention_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)
        self.k_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)
        self.v_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)
        self.o_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)

    def forward(self, x_NSW: torch.Tensor, freqs_SP: torch.Tensor, return_weights: bool = False):
        N, S, W = x_NSW.shape
        q_NSHD = apply_rope(self.q_proj(x_NSW).view(N, S, self.n_heads, self.head_dim), freqs_SP)
        k_NSHD = apply_rope(self.k_proj(x_NSW).view(N, S, self.n_heads, self.head_dim), freqs_SP)
        v_NSHD = self.v_proj(x_NSW).view(N, S, self.n_heads, self.head_dim)
        q, k, v = q_NSHD.transpose(1, 2), k_NSHD.transpose(1, 2), v_NSHD.transpose(1, 2)  # [N, H, S, Dh]
        w_NHSS = None
        if return_weights:  # explicit softmax(q kᵀ / √Dh) v, no mask: every patch sees every patch
            w_NHSS = ((q @ k.transpose(-1, -2)) * self.head_dim ** -0.5).softmax(-1)
            out = w_NHSS @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.o_proj(out.transpose(1, 2).reshape(N, S, W))
        return (out, w_NHSS) if return_weights else out


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size, bias=True)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size, bias=True)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class VisionLayer(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.self_attn = VisionAttention(c)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.mlp = VisionMLP(c)

    def forward(self, x_NSW, freqs_SP, return_weights: bool = False):
        attn = self.self_attn(self.input_layernorm(x_NSW), freqs_SP, return_weights)
        attn, w = attn if return_weights else (attn, None)
        h_NSW = x_NSW + attn  # h = x + Attn(LN₁(x))
        return h_NSW + self.mlp(self.post_attention_layernorm(h_NSW)), w  # out = h + MLP(LN₂(h))


class VisionEncoder(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(c) for _ in range(c.num_hidden_layers))


class AdapterMLP(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.intermediate_size, c.projector_input_dim, bias=False)
        self.fc2 = nn.Linear(c.projector_input_dim, c.projector_output_dim, bias=False)

    def forward(self, x):
        return F.gelu(self.fc2(F.gelu(self.fc1(x))))  # GELU after BOTH layers


class VisionAdapter(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.ratio = c.pixel_shuffle_ratio
        self.mlp = AdapterMLP(c)

    def forward(self, x_NPW):
        return self.mlp(pixel_shuffle(x_NPW, self.ratio))


class VisionModel(nn.Module):
    """Tiles [N, C, S, S] → image features [N, (rG)², vision_output_dim] (before the projector)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        W, G2 = c.hidden_size, c.grid_size ** 2
        self.patch_embedding = PatchEmbedding(c)
        self.class_embedding = nn.Parameter(torch.randn(W) * W ** -0.5)  # appended LAST
        self.positional_embedding_vlm = nn.Parameter(torch.randn(G2 + 1, W) * W ** -0.5)  # [G² + 1, W]
        self.layernorm_pre = nn.LayerNorm(W, eps=c.norm_eps)
        self.layernorm_post = nn.LayerNorm(W, eps=c.norm_eps)
        self.model = VisionEncoder(c)
        self.vision_adapter = VisionAdapter(c)
        self.register_buffer("freqs", vision_rope_angles(c.grid_size, c.head_dim, c.rope_theta), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=c.initializer_range)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def reset_buffers(self) -> None:
        """Recompute the RoPE table on the weights' device (after building on `meta` and loading)."""
        c = self.config
        self.freqs = vision_rope_angles(c.grid_size, c.head_dim, c.rope_theta).to(self.class_embedding.device)

    def check_pixels(self, pixel_values: torch.Tensor) -> None:
        c = self.config
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be tiles [num_tiles, channels, height, width], got shape "
                             f"{tuple(pixel_values.shape)} (see minillama4.image.preprocess)")
        n, ch, h, w = pixel_values.shape
        if ch != c.num_channels:
            raise ValueError(f"pixel_values have {ch} channels; this vision model takes {c.num_channels} (RGB)")
        if (h, w) != (c.image_size, c.image_size):
            raise ValueError(f"tiles are {h}×{w} pixels; this vision model takes {c.image_size}×{c.image_size} tiles "
                             "(minillama4.image.preprocess resizes and tiles an image)")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be normalised floats, got {pixel_values.dtype} "
                             "(minillama4.image.preprocess does that)")

    def forward(self, pixel_values: torch.Tensor, return_attention: bool = False):
        """pixel_values [N, C, S, S] → features [N, (rG)², vision_output_dim]; with return_attention also a list of
        each ViT layer's attention weights [N, H, G² + 1, G² + 1]."""
        self.check_pixels(pixel_values)
        x = pixel_values.to(self.class_embedding.dtype)
        h_NPW = self.patch_embedding(x)  # [N, G², W]
        cls_NW = self.class_embedding.expand(h_NPW.shape[0], 1, -1)
        h_NSW = torch.cat([h_NPW, cls_NW], dim=1) + self.positional_embedding_vlm  # [N, G² + 1, W], class token last
        h_NSW = self.layernorm_pre(h_NSW)
        attentions = []
        for layer in self.model.layers:
            h_NSW, w = layer(h_NSW, self.freqs, return_attention)
            attentions.append(w)
        h_NPW = self.layernorm_post(h_NSW)[:, :-1]  # drop the class token
        feats = self.vision_adapter(h_NPW)  # [N, (rG)², vision_output_dim]
        return (feats, attentions) if return_attention else feats


class MultiModalProjector(nn.Module):
    """Image features → the text model's width: one linear map, no bias, no activation."""

    def __init__(self, vision_output_dim: int, text_hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision_output_dim, text_hidden_size, bias=False)

    def forward(self, x):
        return self.linear_1(x)
