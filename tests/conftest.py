"""Shared test helpers: tiny random Llama 4 checkpoints written by transformers itself, in the real formats, and
bench/'s scripts imported as modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the test-only numerical reference")

CHUNK = 8  # attention_chunk_size of the tiny models: 37-token inputs span 5 chunks
FLOOR = 4  # floor_scale: temperature tuning already changes queries from position 3 on
LLAMA3 = {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
          "original_max_position_embeddings": 8}


def hf_text_config(kind: str = "scout", top_k: int = 1, **over) -> "transformers.Llama4TextConfig":
    """A tiny transformers text config, Scout-like (MoE every layer, QK-norm, llama3 scaling) or Maverick-like
    (dense/MoE interleaved, no QK-norm, no scaling)."""
    kw = dict(vocab_size=160, hidden_size=64, intermediate_size=48, intermediate_size_mlp=96, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=top_k,
              attention_chunk_size=CHUNK, floor_scale=FLOOR, attn_scale=0.1, attn_temperature_tuning=True,
              initializer_range=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2, max_position_embeddings=512)
    if kind == "scout":
        kw.update(use_qk_norm=True, interleave_moe_layer_step=1, rope_parameters={"rope_theta": 10000.0, **LLAMA3})
    elif kind == "maverick":
        kw.update(use_qk_norm=False, interleave_moe_layer_step=2, num_local_experts=8,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    else:
        raise ValueError(kind)
    kw.update(over)
    return transformers.Llama4TextConfig(**kw)


def tiny_vision_config() -> dict:
    # the adapter takes hidden/ratio² = intermediate_size inputs, as in the real config
    return dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, image_size=28,
                patch_size=14, vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)


def write_hf_checkpoint(path, kind="scout", top_k=1, layout="causal", dtype=torch.float32, max_shard_size=None,
                        seed=0, **over):
    """Random-init a transformers Llama 4 model and save_pretrained it. layout 'causal' → Llama4ForCausalLM,
    'conditional' → Llama4ForConditionalGeneration (language_model.* + vision tensors). Returns the path."""
    torch.manual_seed(seed)
    text = hf_text_config(kind, top_k, **over)
    if layout == "causal":
        model = transformers.Llama4ForCausalLM(text)
    else:
        cfg = transformers.Llama4Config(text_config=text.to_dict(), vision_config=tiny_vision_config())
        model = transformers.Llama4ForConditionalGeneration(cfg)
    model = model.to(dtype)
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(path), **kw)
    return path


def load_hf(path, layout="causal", attn="eager"):
    """The transformers model of a checkpoint, in float32, with a fixed attention implementation."""
    cls = transformers.Llama4ForCausalLM if layout == "causal" else transformers.Llama4ForConditionalGeneration
    return cls.from_pretrained(str(path), dtype=torch.float32, attn_implementation=attn).eval()


def rewrite_checkpoint(path, edit):
    """Edit a single-file checkpoint's tensors in place: edit(state_dict) may pop, add or replace entries."""
    from safetensors.torch import load_file, save_file

    f = path / "model.safetensors"
    sd = load_file(str(f))
    edit(sd)
    save_file(sd, str(f), metadata={"format": "pt"})


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a|"""
    return ((a.float() - b.float()).abs().max() / a.float().abs().max()).item()


def hand_adamw_step(model, opt, loss, lr: float, grad_clip: float) -> None:
    """One optimizer step written out by hand (the reference the package's `optimizer_step` is checked against): set
    the learning rate, backward, clip the global gradient norm, step."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


@pytest.fixture
def scout_ckpt(tmp_path):
    return write_hf_checkpoint(tmp_path / "scout", "scout")


def pytest_addoption(parser):
    parser.addoption("--impl", choices=["solutions", "exercises"], default="exercises",
                     help="which implementation the graded-exercise tests (tests/exercises) grade: your exercises/ "
                          "(the default) or the reference solutions/ (CI: all must pass)")


@pytest.fixture
def quick_compile(monkeypatch):
    """torch.compile as the package calls it, run with the "aot_eager" backend: the same whole graph (fullgraph still
    refuses any break), without generating code, which takes minutes on a busy 2-core machine. Returns the list of
    the options each call asked for."""
    import torch

    calls, real = [], torch.compile

    def compile(fn, **options):
        calls.append(options)
        return real(fn, **{**options, "backend": "aot_eager"})

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", compile)
    return calls


def bench_module(name: str):
    """bench/<name>.py as a module. bench/ is on the import path only while it loads, so that the script's own
    imports of its neighbours (spread.py) resolve, and no test sees bench/'s files as top-level modules after."""
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(bench)
