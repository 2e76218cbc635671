"""Llama4Config: every number that decides the shape and behaviour of a Llama 4 text model.

One dataclass, three presets (`toy`, `scout`, `maverick`) and a faithful reader/writer for the
`config.json` that Hugging Face checkpoints ship (`from_hf` / `to_hf`), including its quirks:

* `no_rope_layers[i] == 1` means layer i *uses* RoPE (the name says the opposite);
* `attn_temperature_tuning` was stored as the int 4 in the release-time Scout config: any truthy value means on;
* llama3 `rope_scaling` may have `low_freq_factor == high_freq_factor` (current Scout: 16 / 1 / 1);
* the RoPE settings are spelled `rope_scaling` + `rope_theta` (transformers 4.x) or `rope_parameters` (5.x);
* the MoE layers are given either as `moe_layers` or derived from `interleave_moe_layer_step`.

`parametrization` (how the weights are initialised and how fast each one learns, `metap.py`) is not a transformers
field: `to_hf` writes it under the key `minillama4_parametrization` only for "metap", and a `config.json` without
that key is "standard".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .vision import VisionConfig

PARAMETRIZATIONS = ("standard", "metap")  # see metap.py
HF_PARAMETRIZATION_KEY = "minillama4_parametrization"  # config.json key holding a non-standard parametrization


def _bad(msg: str) -> None:
    raise ValueError(f"invalid Llama4Config: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool, a string, NaN or inf)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _flag(name: str, v: Any) -> bool:
    """A boolean field, as bool or int (the release-time Scout config stores the int 4 for true)."""
    if not isinstance(v, (bool, int)):
        _bad(f"{name} must be true or false, got {v!r}")
    return bool(v)


def _int_list(name: str, v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) for i in v):
        _bad(f"{name} must be a list of ints, got {v!r}")
    return [int(i) for i in v]


# config.json keys with no safe default: without them the checkpoint's shapes are unknown (a missing key must not
# silently become Scout's value)
REQUIRED_HF_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


@dataclass
class Llama4Config:
    vocab_size: int = 202048  # V: 200,000 BPE tokens + 2,048 special tokens
    hidden_size: int = 5120  # D: width of the residual stream
    num_hidden_layers: int = 48  # L: number of decoder layers
    num_attention_heads: int = 40  # H: query heads per attention layer
    num_key_value_heads: int = 8  # K: key/value heads (GQA: H/K query heads share one kv head)
    head_dim: int = 128  # Dh: width of one attention head (H * Dh need not equal D, but does in Llama 4)
    intermediate_size: int = 8192  # F: hidden width of each routed expert and of the shared expert
    intermediate_size_mlp: int = 16384  # hidden width of the dense FFN in non-MoE layers (Maverick's even layers)
    num_local_experts: int = 16  # E: routed experts per MoE layer (Scout 16, Maverick 128)
    num_experts_per_tok: int = 1  # k: experts chosen per token by the router (1 in Llama 4)
    interleave_moe_layer_step: int = 1  # every step-th layer is MoE (Scout 1 = all, Maverick 2 = odd layers)
    moe_layers: list[int] | None = None  # explicit MoE layer indices; derived from the step when None
    no_rope_layer_interval: int = 4  # every interval-th layer is a NoPE (global attention) layer
    no_rope_layers: list[int] | None = None  # per layer: 1 = RoPE (chunked attention), 0 = NoPE; derived when None
    attention_chunk_size: int | None = 8192  # RoPE layers attend within fixed blocks of this many tokens; None = all global
    use_qk_norm: bool = True  # weightless RMS norm of q and k on RoPE layers (Scout yes, Maverick no)
    attn_temperature_tuning: bool = True  # scale NoPE-layer queries by 1 + attn_scale * ln(floor((p+1)/floor_scale) + 1)
    floor_scale: int = 8192  # positions per temperature step
    attn_scale: float = 0.1  # strength of the temperature tuning
    rope_theta: float = 500000.0  # RoPE base wavelength
    rope_scaling: dict[str, Any] | None = None  # llama3 frequency scaling: factor, low/high_freq_factor, original_max_position_embeddings
    rms_norm_eps: float = 1e-5  # epsilon of every RMSNorm (and of the QK norm)
    max_position_embeddings: int = 262144  # longest context the model is configured for
    tie_word_embeddings: bool = False  # share embed_tokens and lm_head (never in Llama 4; allowed for toys)
    initializer_range: float = 0.02  # std of the normal init of every weight matrix
    pad_token_id: int | None = 200018  # <|finetune_right_pad|>
    bos_token_id: int | None = 200000  # <|begin_of_text|>
    eos_token_id: int | list[int] | None = 200001  # <|end_of_text|> (Instruct: also <|eom|>, <|eot|>)
    vision_config: VisionConfig | None = None  # the ViT + projector of a multimodal model; None = text only
    image_token_id: int = 200092  # <|patch|>: positions whose embedding is replaced by an image feature
    parametrization: str = "standard"  # "standard": one init std, one learning rate; "metap": per-layer scales (metap.py)
    base_hidden_size: int = 128  # metap: the width D₀ its learning rate is tuned at (its scales equal standard's there)
    base_num_layers: int = 4  # metap: the depth L₀ its learning rate is tuned at

    def __post_init__(self) -> None:
        self._check_scalars()  # the layer lists below are derived from them
        L = self.num_hidden_layers
        if self.moe_layers is None:
            self.moe_layers = list(range(self.interleave_moe_layer_step - 1, L, self.interleave_moe_layer_step))
        if not self.no_rope_layers:
            self.no_rope_layers = [int((i + 1) % self.no_rope_layer_interval != 0) for i in range(L)]
        self.moe_layers = _int_list("moe_layers", self.moe_layers)
        self.no_rope_layers = _int_list("no_rope_layers", self.no_rope_layers)
        self.attn_temperature_tuning = _flag("attn_temperature_tuning", self.attn_temperature_tuning)  # Scout: the int 4
        self.use_qk_norm = _flag("use_qk_norm", self.use_qk_norm)
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict):
                _bad(f"rope_scaling must be a dict or None, got {self.rope_scaling!r}")
            self.rope_scaling = dict(self.rope_scaling)
        if isinstance(self.vision_config, dict):  # from dataclasses.asdict / replace
            self.vision_config = VisionConfig(**self.vision_config)
        self.validate()

    # ----------------------------------------------------------------------------------------------- checks
    def _check_scalars(self) -> None:
        """Raise ValueError naming the first scalar field of the wrong type or out of range (a string, NaN, inf)."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "intermediate_size", "num_local_experts", "num_experts_per_tok", "max_position_embeddings",
                     "interleave_moe_layer_step", "no_rope_layer_interval", "floor_scale"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                _bad(f"{name} must be a positive int, got {v!r}")
        for name in ("rope_theta", "rms_norm_eps", "attn_scale", "initializer_range"):
            v = getattr(self, name)
            if not _is_number(v):
                _bad(f"{name} must be a finite number, got {v!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            _bad(f"tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}")
        for name in ("pad_token_id", "bos_token_id"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 0):
                _bad(f"{name} must be a token id >= 0 or None, got {v!r}")
        eos = self.eos_token_id
        if eos is not None and not (_is_int(eos) and eos >= 0) and not (
                isinstance(eos, (list, tuple)) and all(_is_int(i) and i >= 0 for i in eos)):
            _bad(f"eos_token_id must be a token id, a list of token ids or None, got {eos!r}")

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes the model impossible to build."""
        self._check_scalars()
        if self.num_attention_heads % self.num_key_value_heads:
            _bad(f"num_key_value_heads={self.num_key_value_heads} must divide num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            _bad(f"head_dim={self.head_dim} must be even (RoPE rotates pairs of dimensions)")
        if self.hidden_size % self.num_attention_heads:
            _bad(f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}")
        if self.num_experts_per_tok > self.num_local_experts:
            _bad(f"num_experts_per_tok={self.num_experts_per_tok} > num_local_experts={self.num_local_experts}")
        L = self.num_hidden_layers
        if len(self.no_rope_layers) < L or any(b not in (0, 1) for b in self.no_rope_layers):
            _bad(f"no_rope_layers must hold one 0/1 flag per layer ({L} layers), got {self.no_rope_layers!r}")
        if any(not 0 <= i < L for i in self.moe_layers) or len(set(self.moe_layers)) != len(self.moe_layers):
            _bad(f"moe_layers must be distinct layer indices in [0, {L}), got {self.moe_layers!r}")
        if len(self.moe_layers) < L and (not isinstance(self.intermediate_size_mlp, int) or self.intermediate_size_mlp <= 0):
            _bad(f"dense layers need a positive intermediate_size_mlp, got {self.intermediate_size_mlp!r}")
        if self.attention_chunk_size is not None and (not isinstance(self.attention_chunk_size, int) or self.attention_chunk_size <= 0):
            _bad(f"attention_chunk_size must be a positive int or None, got {self.attention_chunk_size!r}")
        if self.attn_temperature_tuning and self.attn_scale < 0:
            _bad(f"attn_scale must be >= 0, got {self.attn_scale}")
        if self.rope_theta <= 0:
            _bad(f"rope_theta must be > 0, got {self.rope_theta}")
        if self.rms_norm_eps <= 0:
            _bad(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        rs = self.rope_scaling
        if rs is not None:
            kind = rs.get("rope_type", rs.get("type", "llama3"))
            if kind != "llama3":
                _bad(f"rope_scaling type {kind!r} is not supported (Llama 4 uses 'llama3' or none)")
            missing = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"} - rs.keys()
            if missing:
                _bad(f"llama3 rope_scaling lacks {sorted(missing)}")
            for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                if not _is_number(rs[k]):
                    _bad(f"rope_scaling {k} must be a finite number, got {rs[k]!r}")
            if rs["factor"] < 1 or rs["low_freq_factor"] <= 0 or rs["high_freq_factor"] < rs["low_freq_factor"]:
                _bad(f"llama3 rope_scaling needs factor >= 1 and 0 < low_freq_factor <= high_freq_factor, got {rs}")
        if self.vision_config is not None and not isinstance(self.vision_config, VisionConfig):
            _bad(f"vision_config must be a VisionConfig or None, got {type(self.vision_config).__name__}")
        if not isinstance(self.image_token_id, int) or self.image_token_id < 0:
            _bad(f"image_token_id must be a token id >= 0, got {self.image_token_id!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            _bad(f"parametrization must be one of {', '.join(map(repr, PARAMETRIZATIONS))}, got {self.parametrization!r}")
        for name in ("base_hidden_size", "base_num_layers"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                _bad(f"{name} must be a positive int, got {v!r}")
        if self.parametrization == "metap" and self.tie_word_embeddings:
            _bad("metap needs separate embed_tokens and lm_head (their init and learning rate differ): "
                 "set tie_word_embeddings=False")
        if self.parametrization == "metap" and self.vision_config is not None:
            _bad("metap has rules for the text decoder only: use it without a vision_config")

    # ----------------------------------------------------------------------------------------------- derived
    def is_moe_layer(self, i: int) -> bool:
        return i in self.moe_layers

    def uses_rope(self, i: int) -> bool:
        """True for RoPE layers (chunked attention, QK-norm); False for NoPE layers (global, temperature tuning)."""
        return bool(self.no_rope_layers[i])

    def is_chunked(self, i: int) -> bool:
        return self.uses_rope(i) and self.attention_chunk_size is not None

    def num_parameters(self, active: bool = False) -> int:
        """Parameter count from the shapes alone (no model built). active=True counts one text token's path:
        the shared expert plus k routed experts in each MoE layer, every other text weight once (no vision)."""
        D, V, F = self.hidden_size, self.vocab_size, self.intermediate_size
        attn = D * self.num_attention_heads * self.head_dim * 2 + D * self.num_key_value_heads * self.head_dim * 2
        swiglu = lambda f: 3 * D * f  # noqa: E731  gate, up, down
        total = V * D * (1 if self.tie_word_embeddings else 2) + D  # embeddings, lm_head, final norm
        n_moe = len(self.moe_layers)
        n_dense = self.num_hidden_layers - n_moe
        experts = self.num_experts_per_tok if active else self.num_local_experts
        total += self.num_hidden_layers * (attn + 2 * D)  # attention and the two norms of every layer
        total += n_moe * (D * self.num_local_experts + swiglu(F) + experts * swiglu(F))  # router, shared, routed
        if n_dense:
            total += n_dense * swiglu(self.intermediate_size_mlp)
        if self.vision_config is not None and not active:  # the ViT + projector (not on a text token's path)
            total += self.vision_config.num_parameters(D)
        return total

    # ----------------------------------------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str) -> "Llama4Config":
        """`toy` trains on 2 CPU cores in minutes; `scout` and `maverick` have the real dimensions."""
        if name == "toy":
            return cls(vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=32, intermediate_size=256, intermediate_size_mlp=512, num_local_experts=4,
                       num_experts_per_tok=1, attention_chunk_size=64, floor_scale=64, rope_theta=10000.0,
                       max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        if name == "scout":
            return cls(rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                                     "original_max_position_embeddings": 8192},
                       max_position_embeddings=10485760, eos_token_id=[200001, 200007, 200008])
        if name == "maverick":
            return cls(num_local_experts=128, interleave_moe_layer_step=2, use_qk_norm=False,
                       max_position_embeddings=1048576, eos_token_id=[200001, 200007, 200008])
        raise ValueError(f"unknown preset {name!r}; choose 'toy', 'scout' or 'maverick'")

    def replace(self, **changes: Any) -> "Llama4Config":
        """A copy with some fields changed (derived layer lists are re-derived unless given)."""
        d = dataclasses.asdict(self)
        if "num_hidden_layers" in changes or "interleave_moe_layer_step" in changes:
            d.setdefault("moe_layers", None)
            d["moe_layers"] = changes.pop("moe_layers", None)
        if "num_hidden_layers" in changes or "no_rope_layer_interval" in changes:
            d["no_rope_layers"] = changes.pop("no_rope_layers", None)
        d.update(changes)
        return type(self)(**d)

    # ----------------------------------------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "Llama4Config":
        """Read a Hugging Face `config.json` dict: the text config of Llama4ForCausalLM, or the full
        Llama4ForConditionalGeneration config (its `text_config` is used)."""
        if not isinstance(hf, dict):
            raise ValueError(f"expected a config dict, got {type(hf).__name__}")
        vision = {}
        if "text_config" in hf:  # Llama4ForConditionalGeneration: text_config + vision_config + image token
            if hf.get("vision_config"):
                vision["vision_config"] = VisionConfig.from_hf(hf["vision_config"])
                vision["image_token_id"] = hf.get("image_token_index", hf.get("image_token_id", cls.image_token_id))
            hf = hf["text_config"]
            if not isinstance(hf, dict):
                raise ValueError(f"config.json's text_config must be a dict, got {type(hf).__name__}")
        mt = hf.get("model_type", "llama4_text")
        if mt not in ("llama4_text", "llama4"):
            raise ValueError(f"config.json has model_type {mt!r}; expected a Llama 4 text config ('llama4_text')")
        missing = [k for k in REQUIRED_HF_KEYS if hf.get(k) is None]
        if missing:
            raise ValueError(f"config.json lacks {', '.join(missing)}: the model's shapes cannot be known without it")
        known = {f.name for f in dataclasses.fields(cls)} - {"vision_config", "image_token_id", *_PARAMETRIZATION_FIELDS}
        kw = {k: v for k, v in hf.items() if k in known and k not in ("rope_scaling", "rope_theta")}
        kw.update(vision)
        kw.update(_parametrization_from_hf(hf.get(HF_PARAMETRIZATION_KEY)))
        # RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; 4.x wrote rope_theta + rope_scaling.
        for key in ("rope_parameters", "rope_scaling"):
            if hf.get(key) is not None and not isinstance(hf[key], dict):
                raise ValueError(f"config.json's {key} must be a dict, got {hf[key]!r}")
        rope = dict(hf.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", None) or hf.get("rope_theta", cls.rope_theta)
        if not rope or rope.get("rope_type", rope.get("type")) == "default":
            rope = dict(hf.get("rope_scaling") or {})
        kind = rope.get("rope_type", rope.get("type"))
        kw["rope_theta"] = float(theta) if _is_number(theta) else theta  # anything else: validate() names it
        kw["rope_scaling"] = None if not rope or kind in (None, "default") else {
            "rope_type": kind, **{k: v for k, v in rope.items() if k not in ("rope_type", "type", "partial_rotary_factor")}}
        if kw["rope_scaling"] is not None and kind == "llama3":
            kw["rope_scaling"].setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
        if hf.get("head_dim") is None and _is_int(hf["hidden_size"]) and _is_int(hf["num_attention_heads"]) \
                and hf["num_attention_heads"] > 0:
            kw["head_dim"] = hf["hidden_size"] // hf["num_attention_heads"]
        if hf.get("num_key_value_heads") is None:
            kw["num_key_value_heads"] = hf["num_attention_heads"]
        cfg = cls(**kw)
        dense = len(cfg.moe_layers) < cfg.num_hidden_layers
        for key, needed in (("num_local_experts", bool(cfg.moe_layers)), ("intermediate_size_mlp", dense)):
            if needed and hf.get(key) is None:
                raise ValueError(f"config.json lacks {key}: the model's shapes cannot be known without it")
        return cfg

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict for transformers' Llama4ForCausalLM (transformers 5 spelling, also read by 4.x);
        with a vision_config, the Llama4ForConditionalGeneration dict holding it as `text_config`."""
        d = dataclasses.asdict(self)
        d.pop("vision_config"), d.pop("image_token_id")
        parametrization = {k: d.pop(k) for k in _PARAMETRIZATION_FIELDS}
        if parametrization["parametrization"] != "standard":  # a checkpoint without the key is standard
            d[HF_PARAMETRIZATION_KEY] = {"name": parametrization.pop("parametrization"), **parametrization}
        theta, scaling = d.pop("rope_theta"), d.pop("rope_scaling")
        rope = {"rope_type": "default", "rope_theta": theta}
        if scaling is not None:
            rope.update(scaling)
            rope["rope_theta"] = theta
        d.update(
            architectures=["Llama4ForCausalLM"], model_type="llama4_text", rope_parameters=rope, hidden_act="silu",
            attention_bias=False, attention_dropout=0.0,
            layer_types=["chunked_attention" if b and self.attention_chunk_size is not None else "full_attention"
                         for b in self.no_rope_layers],
        )
        if self.vision_config is None:
            return d
        d.pop("architectures")
        return {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "text_config": d,
                "vision_config": self.vision_config.to_hf(), "image_token_index": self.image_token_id,
                "tie_word_embeddings": self.tie_word_embeddings}


_PARAMETRIZATION_FIELDS = ("parametrization", "base_hidden_size", "base_num_layers")


def _parametrization_from_hf(stored: Any) -> dict[str, Any]:
    """The config fields of a stored `minillama4_parametrization` entry ({} when absent: standard)."""
    if stored is None:
        return {}
    if not isinstance(stored, dict) or "name" not in stored:
        raise ValueError(f"config.json {HF_PARAMETRIZATION_KEY} must be a dict with a 'name', got {stored!r}")
    unknown = set(stored) - {"name", *_PARAMETRIZATION_FIELDS}
    if unknown:
        raise ValueError(f"config.json {HF_PARAMETRIZATION_KEY} has unknown keys {sorted(unknown)}")
    return {"parametrization": stored["name"], **{k: v for k, v in stored.items() if k != "name"}}
