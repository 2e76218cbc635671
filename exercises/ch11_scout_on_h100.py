# GENERATED from solutions/ch11_scout_on_h100.py by scripts/make_exercises.py (stub ead9280d4217): this is your file, fill in the stubs.
"""Chapter 11 exercises: group-wise int4 quantization, nibble packing, the int4 matmul and the memory arithmetic of
an int4 model.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 11`. Shapes: a weight W is [N, K] (out,
in; used as x Wᵀ), g is the group size (K is a multiple of g), G = K / g groups per row, M rows of activations.
"""

import torch


def quantize_groupwise(w_NK: torch.Tensor, group_size: int):
    """Symmetric group-wise int4 quantization of W [N, K] (any float dtype; compute in float32). Each row is cut into
    G = K / g groups of g consecutive inputs; group j of row n gets one scale

        s[n, j] = max_{k in group j} |W[n, k]| / 8,   clamped to at least 1e-6 (an all-zero group)

    and every weight becomes q[n, k] = clamp(round(W[n, k] / s[n, k // g]), -8, 7) (torch.round: halves to even).
    Return (q int8 [N, K], s float32 [N, G])."""
    # YOUR CODE HERE
    raise NotImplementedError()


def dequantize_groupwise(q_NK: torch.Tensor, s_NG: torch.Tensor) -> torch.Tensor:
    """Ŵ[n, k] = q[n, k] · s[n, k // g], with g = K / G read off the shapes. q int8 [N, K], s [N, G] → float32 [N, K]."""
    # YOUR CODE HERE
    raise NotImplementedError()


def pack_nibbles(q_NK: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values per byte. q int8 [N, K] in [-8, 7], K even → uint8 [N, K/2]. Store u = q + 8 in [0, 15]
    ("offset binary"); byte i of a row holds element 2i in its low nibble and element 2i + 1 in its high nibble:

        byte[n, i] = u[n, 2i] | (u[n, 2i + 1] << 4)"""
    # YOUR CODE HERE
    raise NotImplementedError()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_nibbles: uint8 [N, K/2] → int8 [N, K] in [-8, 7], element 2i from the low nibble of byte i
    and element 2i + 1 from its high nibble, each minus 8."""
    # YOUR CODE HERE
    raise NotImplementedError()


def int4_linear(x_MK: torch.Tensor, packed: torch.Tensor, s_NG: torch.Tensor) -> torch.Tensor:
    """y = x Ŵᵀ for a weight stored as packed nibbles (pack_nibbles layout, uint8 [N, K/2]) and float32 scales [N, G]:
    unpack, dequantize, then one matmul in float32. x [M, K] → y float32 [M, N]. (This is the CPU reference path of
    an int4 layer; a GPU kernel computes the same thing without ever writing Ŵ to memory.)"""
    # YOUR CODE HERE
    raise NotImplementedError()


def int4_model_bytes(config, dtype_bytes: int = 2, group_size: int = 128, scale_bytes: int = 4) -> int:
    """Bytes of a Llama 4 text model after Meta's int4 recipe, from its config alone. In every MoE layer
    (`config.moe_layers`) the routed experts (`config.num_local_experts`) and the shared expert each hold three
    matrices of D × F weights (D = hidden_size, F = intermediate_size: gate [F, D], up [F, D], down [D, F]); each
    such matrix costs half a byte per weight plus one scale of `scale_bytes` per group of `group_size` weights
    along its input dimension. Every other parameter (`config.num_parameters()` counts them all) keeps
    `dtype_bytes` per weight."""
    # YOUR CODE HERE
    raise NotImplementedError()
