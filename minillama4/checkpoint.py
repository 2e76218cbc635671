"""Loading and saving Hugging Face Llama 4 checkpoints (safetensors only).

Layouts read by `from_pretrained`:
  Llama4ForConditionalGeneration  language_model.model.*, language_model.lm_head.*  (+ vision_model.*, multi_modal_projector.*)
  Llama4ForCausalLM               model.*, lm_head.*
from `model.safetensors` or from shards listed in `model.safetensors.index.json`.

The model is first built on the `meta` device (no memory), then each tensor is read from its memory-mapped file,
checked against the shape the config implies, converted and placed: at no point is there a second full copy of
the weights. Anything unexpected is an error naming the tensor: missing, unexpected, mis-shaped, truncated file.
Pickle-based files (`.bin`, `.pth`, `.pt`) are refused: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import Llama4Config
from .model import Llama4

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_TEXT_PREFIXES = ("language_model.model.", "language_model.", "model.")  # longest first
_VISION_PREFIXES = ("vision_model.", "multi_modal_projector.")  # read by the multimodal model, skipped here


class CheckpointError(ValueError):
    """A checkpoint directory that does not hold what the config says it should."""


def load_config(path: str | os.PathLike) -> Llama4Config:
    """Llama4Config from `path/config.json`."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face Llama 4 directory?)")
    try:
        hf = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    return Llama4Config.from_hf(hf)


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".pkl"))
    if pickles:
        raise CheckpointError(
            f"{path}: found only pickle-based weights ({', '.join(pickles[:3])}); minillama4 loads safetensors only, "
            "since unpickling can run arbitrary code. Convert them to safetensors first.")


def checkpoint_files(path: str | os.PathLike) -> dict[str, Path]:
    """Map each tensor name in the checkpoint to the safetensors file that holds it."""
    path = Path(path)
    if path.is_file():
        if path.suffix in (".bin", ".pth", ".pt", ".pkl"):
            raise CheckpointError(f"{path}: pickle-based file refused; minillama4 loads safetensors only "
                                  "(unpickling can run arbitrary code)")
        raise CheckpointError(f"{path}: expected a checkpoint directory, got a file")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from None
        files = {name: path / shard for name, shard in weight_map.items()}
        missing = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if missing:
            raise CheckpointError(f"{path}: shard(s) listed in {INDEX_FILE} are missing: {', '.join(missing)}")
        return files
    single = path / SINGLE_FILE
    if single.is_file():
        with _open(single) as f:
            return {name: single for name in f.keys()}
    _refuse_pickles(path)
    raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file (truncated or corrupt?): {e}") from None


def _our_name(hf_name: str) -> str | None:
    """HF tensor name → minillama4 parameter name; None for vision tensors."""
    if hf_name.startswith(_VISION_PREFIXES):
        return None
    for prefix in _TEXT_PREFIXES:
        if hf_name.startswith(prefix):
            return hf_name[len(prefix):]
    return hf_name


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    quantize: str | None = None) -> Llama4:
    """Build a Llama4 from a Hugging Face checkpoint directory. dtype None keeps the stored dtype."""
    if quantize is not None:
        raise ValueError(f"quantize={quantize!r} is not supported by this version (only None); int4 comes with the H100 loader")
    path = Path(path)
    files = checkpoint_files(path)
    config = load_config(path)
    with torch.device("meta"):
        model = Llama4(config)
    expected = {name: p for name, p in model.named_parameters()}  # tied lm_head appears once, as embed_tokens

    found: dict[str, str] = {}
    unexpected = []
    for hf_name in files:
        ours = _our_name(hf_name)
        if ours is None:
            continue
        if ours not in expected and not (ours == "lm_head.weight" and config.tie_word_embeddings):
            unexpected.append(hf_name)
        else:
            found[ours] = hf_name
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s) not in a Llama 4 model with this config: "
                              f"{', '.join(sorted(unexpected)[:5])}{' …' if len(unexpected) > 5 else ''}")
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")

    by_file: dict[Path, list[str]] = {}
    for ours, hf_name in found.items():
        by_file.setdefault(files[hf_name], []).append(ours)
    loaded: dict[str, torch.Tensor] = {}
    for file, names in sorted(by_file.items()):  # one (memory-mapped) shard at a time
        with _open(file) as f:
            for ours in names:
                hf_name = found[ours]
                want = tuple(expected[ours].shape)
                try:
                    got = tuple(f.get_slice(hf_name).get_shape())
                    if got != want:
                        raise CheckpointError(f"{file.name}: tensor {hf_name} has shape {list(got)}, "
                                              f"expected {list(want)} from config.json")
                    t = f.get_tensor(hf_name)
                except SafetensorError as e:
                    raise CheckpointError(f"{file}: cannot read tensor {hf_name} (truncated or corrupt?): {e}") from None
                if dtype is None:
                    dtype = t.dtype
                loaded[ours] = t.to(device=device, dtype=dtype)
    model.load_state_dict(loaded, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    return model.eval()


def save_pretrained(model: Llama4, path: str | os.PathLike, max_shard_bytes: int | None = None) -> None:
    """Write `config.json` and safetensors weights in the Llama4ForCausalLM layout that transformers loads.
    With max_shard_bytes, split into `model-0000i-of-0000n.safetensors` shards plus an index."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {("lm_head.weight" if k == "lm_head.weight" else "model." + k): v.detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    hf = model.config.to_hf()
    hf["dtype"] = str(model.dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    if max_shard_bytes is None:
        save_file(state, str(path / SINGLE_FILE), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (path / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
