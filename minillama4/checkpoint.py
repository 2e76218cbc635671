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

import ctypes
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from tqdm.auto import tqdm
from safetensors.torch import save_file

from .config import Llama4Config
from .model import Llama4
from .quant import GROUP_SIZE, Int4ExpertBank, Int4Linear, int4_swiglu

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_TEXT_PREFIXES = ("language_model.model.", "language_model.", "model.")  # longest first
_VISION_PREFIXES = ("vision_model.", "multi_modal_projector.")  # same names in our model; skipped by text-only configs


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
    if (path / "params.json").is_file() and any(path.glob("consolidated.*.pth")):
        raise CheckpointError(
            f"{path}: this is Meta's original Llama 4 format (params.json + consolidated.NN.pth: model-parallel shards "
            "with fused wqkv and flattened expert weights). minillama4 reads the Hugging Face format (config.json + "
            "*.safetensors): use the model's Hugging Face repository, or convert with transformers' "
            "models/llama4/convert_llama4_weights_to_hf.py. The .pth files are pickles, which minillama4 never loads.")
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


def _our_name(hf_name: str, vision: bool) -> str | None:
    """HF tensor name → minillama4 parameter name; None for vision tensors when the config has no vision_config."""
    if hf_name.startswith(_VISION_PREFIXES):
        return hf_name if vision else None
    for prefix in _TEXT_PREFIXES:
        if hf_name.startswith(prefix):
            return hf_name[len(prefix):]
    return hf_name


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    quantize: str | None = None, progress: bool | None = None,
                    expert_parallel: bool | str = False) -> Llama4:
    """Build a Llama4 from a Hugging Face checkpoint directory. dtype None keeps the stored dtype.
    quantize="int4": stream the shards, quantizing the routed and shared experts on `device` as they arrive
    (see `_load_int4`). progress: a progress bar over shards and GB (None: only on a terminal).
    expert_parallel=True inside an initialised torch.distributed process group: this rank builds and reads only its
    E/N experts of each MoE layer (`parallel.py`); "tensor": its F/N slice of every expert (Meta's split)."""
    if quantize not in (None, "int4"):
        raise ValueError(f"quantize={quantize!r} is not supported; choose None or 'int4'")
    path = Path(path)
    files = checkpoint_files(path)
    config = load_config(path)
    with torch.device("meta"):
        model = Llama4(config)
    if expert_parallel:
        from .parallel import shard_model
        shard_model(model, "expert" if expert_parallel is True else expert_parallel)
    expected = {name: p for name, p in model.named_parameters()}  # tied lm_head appears once, as embed_tokens

    found: dict[str, str] = {}
    unexpected = []
    for hf_name in files:
        ours = _our_name(hf_name, config.vision_config is not None)
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
    view = _whole
    if expert_parallel:  # this rank's view of each shard: expert tensors show (and read) only its part
        from .parallel import checkpoint_view
        view = checkpoint_view(model, files, found)
    if quantize == "int4":
        return _load_int4(model, files, found, dtype, device, progress, view)

    by_file: dict[Path, list[str]] = {}
    for ours, hf_name in found.items():
        by_file.setdefault(files[hf_name], []).append(ours)
    loaded: dict[str, torch.Tensor] = {}
    for file, names in sorted(by_file.items()):  # one (memory-mapped) shard at a time
        with _open(file) as f:
            f = view(f, file)
            for ours in names:
                t = _read_tensor(f, file, found[ours], tuple(expected[ours].shape))
                if dtype is None:
                    dtype = t.dtype
                loaded[ours] = t.to(device=device, dtype=dtype)
    model.load_state_dict(loaded, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    return model.eval()


def _whole(f, file: Path):
    """An open shard as a single process reads it: every tensor whole."""
    return f


def _load_int4(model: Llama4, files: dict[str, Path], found: dict[str, str], dtype, device, progress, view,
               group_size: int = GROUP_SIZE) -> Llama4:
    """The streaming int4 loader. The MoE layers' experts and shared experts are swapped for empty int4 modules;
    then the shards are read one at a time (memory-mapped), and each tensor is moved to `device` and either placed
    (attention, norms, router, embeddings, lm_head: in `dtype`) or quantized there and dropped; expert tensors are
    read, moved and quantized one expert at a time. So the memory in use is the quantized model so far plus the
    mapped shard and one tensor (or one expert) in full precision, never the bf16 model."""
    config, device = model.config, torch.device(device)
    for layer in model.layers:  # meta → empty int4 modules of the same shapes (the buffers arrive with the shards)
        if layer.is_moe:
            moe = layer.feed_forward
            moe.experts = Int4ExpertBank(moe.experts.num_experts, moe.experts.dim, moe.experts.hidden, group_size)
            moe.shared_expert = int4_swiglu(config.hidden_size, moe.shared_expert.gate_proj.out_features, group_size)
    by_file: dict[Path, list[str]] = {}
    for ours, hf_name in found.items():
        by_file.setdefault(files[hf_name], []).append(ours)
    total = sum(f.stat().st_size for f in by_file)
    report = []
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=None if progress is None else not progress,
               desc=f"int4 load: shard 0/{len(by_file)}")
    for i, (file, names) in enumerate(sorted(by_file.items()), 1):
        bar.set_description(f"int4 load: shard {i}/{len(by_file)}")
        with _open(file) as f:
            f = view(f, file)
            for ours in names:
                module_name, _, leaf = ours.rpartition(".")
                module = model.get_submodule(module_name)
                if isinstance(module, Int4ExpertBank):
                    want = (module.num_experts, module.dim, 2 * module.hidden) if leaf == "gate_up_proj" else \
                        (module.num_experts, module.hidden, module.dim)
                    t = _ExpertSlices(f, file, found[ours], want, device)  # read one expert at a time
                    report += (module.load_gate_up if leaf == "gate_up_proj" else module.load_down)(t, found[ours])
                elif isinstance(module, Int4Linear):
                    t = _read_tensor(f, file, found[ours], (module.out_features, module.in_features)).to(device)
                    report.append(module.set_weight(t, found[ours]))
                else:
                    t = _read_tensor(f, file, found[ours], tuple(getattr(module, leaf).shape))
                    if dtype is None:
                        dtype = t.dtype
                    # copy: a tensor that aliased the memory-mapped shard would keep the whole file mapped
                    setattr(module, leaf, nn.Parameter(t.to(device=device, dtype=dtype, copy=True), requires_grad=False))
                del t  # the full-precision tensor goes here: only its quantized form stays
                _release_freed_memory()
        bar.update(file.stat().st_size)
    bar.close()
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if left:
        raise CheckpointError(f"int4 load left tensors unfilled (a bug): {', '.join(left[:5])}")
    model.quant_report = report
    return model.eval()


def _release_freed_memory() -> None:
    """Ask glibc to hand freed heap memory back to the OS (malloc_trim). Without it, the float temporaries of
    quantization stay in the process as free-but-kept memory, and the resident set grows by about two shards'
    worth over the int4 model; a no-op where there is no glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


@contextmanager
def _reading(file: Path, hf_name: str):
    """Turn safetensors' errors while reading a tensor into a CheckpointError that names the file and the tensor."""
    try:
        yield
    except SafetensorError as e:
        raise CheckpointError(f"{file}: cannot read tensor {hf_name} (truncated or corrupt?): {e}") from None


def _checked_slice(f, file: Path, hf_name: str, want: tuple):
    """The (lazy) slice of one tensor of an open shard, after checking its shape against the config's."""
    with _reading(file, hf_name):
        sl = f.get_slice(hf_name)
        got = tuple(sl.get_shape())
    if got != tuple(want):
        raise CheckpointError(f"{file.name}: tensor {hf_name} has shape {list(got)}, expected {list(want)} from config.json")
    return sl


def _read_tensor(f, file: Path, hf_name: str, want: tuple) -> torch.Tensor:
    """One whole tensor from an open shard, shape-checked; corrupt data is a CheckpointError naming it."""
    _checked_slice(f, file, hf_name, want)
    with _reading(file, hf_name):
        return f.get_tensor(hf_name)


class _ExpertSlices:
    """An expert tensor [E, …] of an open shard, read one expert at a time: `x[e]` reads expert e from the mapped
    file and moves it to `device`. So quantizing a layer's experts holds one expert in full precision, not all E
    (Scout, by arithmetic: 168 MB instead of 2.7 GB for a gate_up_proj)."""

    def __init__(self, f, file: Path, hf_name: str, want: tuple, device: torch.device):
        self.file, self.hf_name, self.device = file, hf_name, device
        self.slice, self.shape = _checked_slice(f, file, hf_name, want), torch.Size(want)

    def __getitem__(self, e: int) -> torch.Tensor:
        with _reading(self.file, self.hf_name):
            return self.slice[e].to(self.device)


def _hf_name(name: str, vision: bool) -> str:
    """minillama4 parameter name → HF tensor name (Llama4ForCausalLM, or Llama4ForConditionalGeneration with vision)."""
    if vision:
        if name.startswith(_VISION_PREFIXES):
            return name
        return "language_model." + (name if name == "lm_head.weight" else "model." + name)
    return name if name == "lm_head.weight" else "model." + name


def save_pretrained(model: Llama4, path: str | os.PathLike, max_shard_bytes: int | None = None) -> None:
    """Write `config.json` and safetensors weights in the layout that transformers loads: Llama4ForCausalLM, or
    Llama4ForConditionalGeneration for a model with a vision_config.
    With max_shard_bytes, split into `model-0000i-of-0000n.safetensors` shards plus an index."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vision = model.config.vision_config is not None
    state = {_hf_name(k, vision): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop(_hf_name("lm_head.weight", vision))
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
