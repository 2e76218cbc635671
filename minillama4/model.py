"""The Llama 4 text model: embeddings → L decoder layers → RMSNorm → lm_head.

Each decoder layer is pre-norm with two residual branches:

    h   = x + Attention(RMSNorm(x))
    out = h + FFN(RMSNorm(h))          FFN = MoE (router + experts + shared expert) or a dense SwiGLU

Which layers are MoE, which use RoPE (chunked) or NoPE (global), all comes from `Llama4Config`.
Parameter names equal the Hugging Face checkpoint keys (minus their `model.` / `language_model.model.` prefix).

With a `vision_config` the model is multimodal (early fusion): `vision_model` turns image tiles into features,
`multi_modal_projector` maps them to the text width, and they replace the embeddings at the `<|patch|>` positions
before the first decoder layer. Everything after that is the same decoder (see `vision.py`).
"""

import numbers

import torch
from torch import nn

from .attention import Attention
from .cache import KVCache
from .config import Llama4Config
from .decode import DecodeStep, check_compilable
from .ffn import SwiGLU
from .memory import ensure_fits
from .metap import scale_init_
from .moe import MoE
from .norm import RMSNorm
from .rope import inverse_frequencies, rope_angles
from .sampling import check_sampling, sample_next_token
from .vision import MultiModalProjector, VisionModel, merge_image_features


class DecoderLayer(nn.Module):
    def __init__(self, config: Llama4Config, layer_idx: int):
        super().__init__()
        c = config
        self.is_moe = c.is_moe_layer(layer_idx)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c, layer_idx)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        if self.is_moe:
            self.feed_forward = MoE(c.hidden_size, c.intermediate_size, c.num_local_experts, c.num_experts_per_tok)
        else:
            self.feed_forward = SwiGLU(c.hidden_size, c.intermediate_size_mlp)

    def forward(self, x_BTD, freqs_TP, positions_T, cache=None, return_attention: bool = False):
        """→ (output, routing or None, attention weights [B, H, T, S] or None)"""
        attn = self.self_attn(self.input_layernorm(x_BTD), freqs_TP, positions_T, cache, return_weights=return_attention)
        attn_BTD, w_BHTS = attn if return_attention else (attn, None)
        h_BTD = x_BTD + attn_BTD
        ffn = self.feed_forward(self.post_attention_layernorm(h_BTD))
        ffn_BTD, routing = ffn if self.is_moe else (ffn, None)
        return h_BTD + ffn_BTD, routing, w_BHTS


def as_token_ids(input_ids, device=None) -> torch.Tensor:
    """input_ids as a [B, T] integer tensor: a tensor, or a list of equally long lists of ints (put on `device`).
    Empty input, float or bool ids, a ragged batch or another shape is a ValueError that says which."""
    if not isinstance(input_ids, torch.Tensor):
        rows = input_ids
        if not isinstance(rows, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in rows):
            raise ValueError(f"input_ids must be a [batch, time] tensor or a list of lists of token ids, got "
                             f"{type(rows).__name__}")
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            raise ValueError(f"input_ids rows have different lengths {lengths}: a batch must be rectangular "
                             "(pad the rows, or run them one at a time)")
        bad = next((i for r in rows for i in r if not isinstance(i, numbers.Integral) or isinstance(i, bool)), None)
        if bad is not None:
            raise ValueError(f"token ids must be ints, got {bad!r}")
        input_ids = torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), lengths[0] if rows else 0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"token ids must be an integer tensor, got {input_ids.dtype}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): there is no token to run the model on")
    return input_ids


class Llama4(nn.Module):
    def __init__(self, config: Llama4Config):
        super().__init__()
        config.validate()
        n, dtype = config.num_parameters(), torch.get_default_dtype()
        ensure_fits(n * dtype.itemsize, torch.get_default_device(), f"a model of {n / 1e9:,.2f} B parameters in {dtype}",
                    hint="build it on the meta device (`with torch.device('meta'):`) to look at its shapes")
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.register_buffer("inv_freq", inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling), persistent=False)
        self.apply(self._init_weights)
        if c.parametrization == "metap":  # per-layer init scales (metap.py); "standard" keeps the init above
            scale_init_(self)
        if c.vision_config is not None:  # built after the text init: the ViT initialises itself (LayerNorm biases …)
            self.vision_model = VisionModel(c.vision_config)
            self.multi_modal_projector = MultiModalProjector(c.vision_config.vision_output_dim, c.hidden_size)
            nn.init.normal_(self.multi_modal_projector.linear_1.weight, std=c.initializer_range)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (RoPE frequencies, routers' selection biases = 0) on the weights'
        device, e.g. after building the model on the meta device and loading a checkpoint."""
        c, device = self.config, self.embed_tokens.weight.device
        self.inv_freq = inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling).to(device)
        for layer in self.layers:
            if layer.is_moe:
                router = layer.feed_forward.router
                router.selection_bias = torch.zeros(router.weight.shape[0], device=device)
        if c.vision_config is not None:
            self.vision_model.reset_buffers()

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tiles [N, C, S, S] → projected features [N · tokens_per_tile, D], one per `<|patch|>` token, in order."""
        if self.config.vision_config is None:
            raise ValueError("this model has no vision_config: it cannot read pixel_values (a text-only Llama 4)")
        feats_NPO = self.vision_model(pixel_values)  # [N, (rG)², vision_output_dim]
        return self.multi_modal_projector(feats_NPO.reshape(-1, feats_NPO.shape[-1]))  # [N·(rG)², D]

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, T, D]; with pixel_values, the `<|patch|>` positions hold the image features instead
        (early fusion): tile after tile, image after image, row after row of the batch."""
        x_BTD = self.embed_tokens(input_ids)
        if pixel_values is None:
            return x_BTD
        if self.config.vision_config is not None and self.config.image_token_id >= self.config.vocab_size:
            raise ValueError(f"image_token_id={self.config.image_token_id} is outside the vocabulary "
                             f"(vocab_size={self.config.vocab_size}): no token can mark where the image goes")
        return merge_image_features(x_BTD, input_ids, self.image_features(pixel_values), self.config.image_token_id)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, *,
                cache: KVCache | None = None, return_routing: bool = False, return_attention: bool = False,
                last_only: bool = False, check_ids: bool = True):
        """input_ids [B, T] → logits [B, T, V] (or [B, 1, V] with last_only).
        pixel_values [N, C, S, S]: image tiles (minillama4.image.preprocess) whose features replace the embeddings of
        the `<|patch|>` tokens in input_ids, in order; their number must equal N · tokens_per_tile.
        With a cache, the tokens continue the cached sequence (positions cache.pos …) and are added to it.
        return_routing=True also returns one RouterOutput per MoE layer; return_attention=True also returns every
        layer's attention weights [B, H, T, S] (computed explicitly, slower: for pictures). The result is then a
        tuple: (logits, routing) / (logits, attention) / (logits, routing, attention).
        check_ids=False skips the token-range check (it makes a GPU wait for the device): generate() passes it for
        the tokens it sampled itself."""
        input_ids = as_token_ids(input_ids, self.device)
        B, T = input_ids.shape
        if check_ids and input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if cache is not None:
            cache.check(T)
            positions_T = cache.positions(T, input_ids.device)  # absolute positions: the cached ones come first
        elif T > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {T} tokens exceeds max_position_embeddings={self.config.max_position_embeddings}")
        else:
            positions_T = torch.arange(T, device=input_ids.device)
        freqs_TP = rope_angles(positions_T, self.inv_freq)  # e^{j p ω}, shared by all RoPE layers

        x_BTD = self.embed(input_ids, pixel_values)
        routings, attentions = [], []
        for layer in self.layers:
            x_BTD, routing, w_BHTS = layer(x_BTD, freqs_TP, positions_T, cache, return_attention)
            if routing is not None:
                routings.append(routing)
            attentions.append(w_BHTS)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x_BTD = x_BTD[:, -1:]
        logits_BTV = self.lm_head(self.norm(x_BTD))
        extras = ([routings] if return_routing else []) + ([attentions] if return_attention else [])
        return (logits_BTV, *extras) if extras else logits_BTV

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        return KVCache(self.config, batch_size, max_len, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
                 eos_token_id: int | list[int] | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, cache_len: int | None = None,
                 pixel_values: torch.Tensor | None = None, compile: bool | str = False) -> torch.Tensor:
        """Continue each row of input_ids [B, T]; returns [B, T + n] with n ≤ max_new_tokens.
        Greedy at temperature 0. Rows that emitted an eos token are padded with it until all rows are done.
        use_cache=False recomputes the whole sequence each step (same tokens, much slower: for comparison).
        pixel_values: the images of the prompt's `<|patch|>` tokens (read once, by the prefill).
        compile=True: the decode steps after the prefill run as one compiled graph, replayed as a CUDA graph on a GPU
        (`decode.py`; the first call pays for compiling). A string names the torch.compile backend instead of its
        default "inductor" (e.g. "aot_eager": the same whole graph, run without generating code)."""
        # every argument is checked before any memory is reserved
        input_ids = as_token_ids(input_ids, self.device)
        B, T = input_ids.shape
        if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        check_sampling(temperature, top_p)
        eos_ok = eos_token_id is None or isinstance(eos_token_id, numbers.Integral) or (
            isinstance(eos_token_id, (list, tuple)) and all(isinstance(i, numbers.Integral) for i in eos_token_id))
        if not eos_ok:
            raise ValueError(f"eos_token_id must be a token id, a list of token ids or None, got {eos_token_id!r}")
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be True, False or a torch.compile backend name, got {compile!r}")
        backend = compile if isinstance(compile, str) else "inductor" if compile else None
        if backend is not None and not use_cache:
            raise ValueError("compile=True compiles the cached decode step: it needs use_cache=True")
        if backend is not None:
            check_compilable(self, B, backend)
        total = T + max_new_tokens
        if total > self.config.max_position_embeddings:
            raise ValueError(f"prompt + new tokens = {total} exceeds max_position_embeddings={self.config.max_position_embeddings}")
        cache = None
        if use_cache:
            if cache_len is not None and (not isinstance(cache_len, numbers.Integral) or cache_len < total):
                raise ValueError(f"KV cache full: cache_len={cache_len!r} cannot hold the prompt's {T} tokens and "
                                 f"{max_new_tokens} new ones")
            cache = self.new_cache(B, cache_len or total)  # refuses a cache larger than the device's memory
        eos = torch.tensor([int(eos_token_id)] if isinstance(eos_token_id, numbers.Integral) else
                           [int(i) for i in eos_token_id or []], dtype=torch.long, device=input_ids.device)
        ids, done = input_ids, torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        step_input = input_ids
        decode = DecodeStep(self, cache, backend=backend) if backend is not None and max_new_tokens > 1 else None
        for step in range(max_new_tokens):
            if decode is not None and step > 0:
                logits_BV = decode(step_input)
            elif use_cache:  # the images enter with the prompt (prefill); decode steps add text tokens only
                logits_BV = self(step_input, pixel_values if step == 0 else None, cache=cache, last_only=True,
                                 check_ids=step == 0)[:, -1]
            else:  # the whole sequence again, images included
                logits_BV = self(ids, pixel_values, last_only=True)[:, -1]
            nxt_B = sample_next_token(logits_BV, temperature, top_p, generator)
            if len(eos):
                nxt_B = torch.where(done, eos[0], nxt_B)
                done |= torch.isin(nxt_B, eos)
            ids = torch.cat([ids, nxt_B[:, None]], dim=1)
            step_input = nxt_B[:, None]
            if len(eos) and done.all():  # (a host-device sync: only when there is something to wait for)
                break
        return ids
