"""Loading and saving Hugging Face Llama 4 checkpoints (safetensors only).

Layouts read by `from_pretrained`:
  Llama4ForConditionalGeneration  language_model.model.*, language_model.lm_head.*  (+ vision_model.*, multi_modal_projector.*)
  Llama4ForCausalLM               model.*, lm_head.*
from `model.safetensors` or from shards listed in `model.safetensors.index.json`.

Before anything is built, config.json is checked (required keys present, numbers finite and of the right type) and
the layers the checkpoint holds are compared with the config's layer counts. Then the model is built on the `meta`
device (no memory), and each tensor is read from its memory-mapped file, checked (shape from the config, a float
dtype, finite values), converted and placed: at no point is there a second full copy of the weights. Anything
unexpected is an error naming the tensor: missing, unexpected, mis-shaped, not a float, NaN or inf, truncated file.
Pickle-based files (`.bin`, `.pth`, `.pt`) are refused: unpickling can run arbitrary code.

`save_pretrained` is atomic: it writes a complete checkpoint into a new folder beside the target and then swaps
the two, so a save that fails midway leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from tqdm.auto import tqdm
from safetensors.torch import save_file

from .config import Llama4Config
from .model import Llama4
from .quant import QUANTIZE_SCHEMES, QuantizedExpertBank, QuantizedLinear, quantized_moe_parts

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_TEXT_PREFIXES = ("language_model.model.", "language_model.", "model.")  # longest first
_VISION_PREFIXES = ("vision_model.", "multi_modal_projector.")  # same names in our model; skipped by text-only configs
_LAYER = re.compile(r"^(vision_model\.model\.)?layers\.(\d+)\.")  # a decoder layer's (or a ViT layer's) tensor
# Stored dtypes the loader converts. Anything else is refused rather than cast: an int8 (or fp8) tensor cast to
# float is a different number, not the weight (quantized checkpoints are not read; quantize="int4" quantizes here).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class CheckpointError(ValueError):
    """A checkpoint directory that does not hold what the config says it should."""


def load_config(path: str | os.PathLike) -> Llama4Config:
    """Llama4Config from `path/config.json`."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face Llama 4 directory?)")
    try:
        hf = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    try:
        return Llama4Config.from_hf(hf)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{f}: {e}") from None


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
    quantize="int4" or "fp8": stream the shards, quantizing the routed and shared experts on `device` as they arrive
    (see `_load_quantized`). progress: a progress bar over shards and GB (None: only on a terminal).
    expert_parallel=True inside an initialised torch.distributed process group: this rank builds and reads only its
    E/N experts of each MoE layer (`parallel.py`); "tensor": its F/N slice of every expert (Meta's split)."""
    if quantize not in (None, *QUANTIZE_SCHEMES):
        raise ValueError(f"quantize={quantize!r} is not supported; choose None, 'int4' or 'fp8'")
    path = Path(path)
    files = checkpoint_files(path)
    config = load_config(path)
    vision = config.vision_config is not None
    ours_of = {hf_name: ours for hf_name in files if (ours := _our_name(hf_name, vision)) is not None}
    _check_layer_counts(path, ours_of.values(), config)  # before building: a wrong layer count must not build first
    with torch.device("meta"):
        model = Llama4(config)
    if expert_parallel:
        from .parallel import shard_model
        shard_model(model, "expert" if expert_parallel is True else expert_parallel)
    expected = {name: p for name, p in model.named_parameters()}  # tied lm_head appears once, as embed_tokens
    found = _match_tensors(path, ours_of, expected, config)
    view = _whole
    if expert_parallel:  # this rank's view of each shard: expert tensors show (and read) only its part
        from .parallel import checkpoint_view
        view = checkpoint_view(model, files, found)
    if quantize is not None:
        return _load_quantized(model, files, found, dtype, device, progress, quantize, view)

    by_file: dict[Path, list[str]] = {}
    for ours, hf_name in found.items():
        by_file.setdefault(files[hf_name], []).append(ours)
    loaded: dict[str, torch.Tensor] = {}
    for file, names in sorted(by_file.items()):  # one (memory-mapped) shard at a time
        with _open(file) as f:
            f = view(f, file)
            for ours in names:
                loaded[ours] = t = _read_tensor(f, file, found[ours], tuple(expected[ours].shape), device, dtype)
                dtype = t.dtype  # None: the first tensor's stored dtype, for all
    model.load_state_dict(loaded, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    return model.eval()


def _check_layer_counts(path: Path, names, config: Llama4Config) -> None:
    """The checkpoint must hold every decoder (and ViT) layer 0 … L-1 of the config. Checked on the tensor names
    alone, before the model is built: a config.json saying 1,000,000 layers over a 2-layer checkpoint is refused at
    once instead of building a million layers first. (Layers beyond L are unexpected tensors: `_match_tensors`.)"""
    held: dict[str, set[int]] = {"": set(), "vision_model.model.": set()}
    for name in names:
        if m := _LAYER.match(name):
            held[m.group(1) or ""].add(int(m.group(2)))
    want = {"": ("num_hidden_layers", config.num_hidden_layers)}
    if config.vision_config is not None:
        want["vision_model.model."] = ("vision_config.num_hidden_layers", config.vision_config.num_hidden_layers)
    for prefix, (key, n) in want.items():
        got = held[prefix]
        if sum(i < n for i in got) < n:  # (no set(range(n)): n may be absurd, got is what exists)
            listed = ", ".join(map(str, sorted(got)[:8])) + (" …" if len(got) > 8 else "")
            raise CheckpointError(f"{path}: config.json says {key}={n}, but the checkpoint holds "
                                  f"{f'{len(got)} layer(s) ({listed})' if got else 'no layers'}")


def _match_tensors(path: Path, names: dict[str, str], expected: dict, config: Llama4Config) -> dict[str, str]:
    """{our parameter name: checkpoint tensor name} covering every parameter of the model; an error naming the
    tensors that are unexpected, missing, or contradict tie_word_embeddings."""
    found: dict[str, str] = {}
    unexpected = []
    for hf_name, ours in names.items():
        if ours == "lm_head.weight" and config.tie_word_embeddings:
            raise CheckpointError(
                f"{path}: config.json has tie_word_embeddings=true (lm_head shares embed_tokens' weights), but the "
                f"checkpoint holds its own {hf_name}: set tie_word_embeddings to false, or remove that tensor")
        if ours not in expected:
            unexpected.append(hf_name)
        else:
            found[ours] = hf_name
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s) not in a Llama 4 model with this config: "
                              f"{', '.join(sorted(unexpected)[:5])}{' …' if len(unexpected) > 5 else ''}")
    missing = sorted(set(expected) - set(found))
    if missing:
        hint = " (an untied model needs its own lm_head: set tie_word_embeddings to true if it shares the " \
               "embeddings)" if missing == ["lm_head.weight"] else ""
        raise CheckpointError(f"{path}: missing tensor(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
                              f"{hint}")
    return found


def _whole(f, file: Path):
    """An open shard as a single process reads it: every tensor whole."""
    return f


def _load_quantized(model: Llama4, files: dict[str, Path], found: dict[str, str], dtype, device, progress,
                    quantize: str, view) -> Llama4:
    """The streaming loader of quantized models ("int4", "fp8"). The MoE layers' experts and shared experts are swapped
    for empty quantized modules; then the shards are read one at a time (memory-mapped), and each tensor is moved to
    `device` and either placed (attention, norms, router, embeddings, lm_head: in `dtype`) or quantized there and
    dropped; expert tensors are read, moved and quantized one expert at a time. So the memory in use is the quantized
    model so far plus the mapped shard and one tensor (or one expert) in full precision, never the bf16 model."""
    config, device = model.config, torch.device(device)
    for layer in model.layers:  # meta → empty quantized modules of the same shapes (the buffers arrive with the shards)
        if layer.is_moe:  # (under expert parallelism: this rank's experts, or its slice of each)
            moe = layer.feed_forward
            moe.experts = quantized_moe_parts(quantize, moe.experts.num_experts, moe.experts.dim, moe.experts.hidden)[0]
            moe.shared_expert = quantized_moe_parts(quantize, 1, config.hidden_size,
                                                    moe.shared_expert.gate_proj.out_features)[1]
    by_file: dict[Path, list[str]] = {}
    for ours, hf_name in found.items():
        by_file.setdefault(files[hf_name], []).append(ours)
    total = sum(f.stat().st_size for f in by_file)
    report = []
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=None if progress is None else not progress,
               desc=f"{quantize} load: shard 0/{len(by_file)}")
    for i, (file, names) in enumerate(sorted(by_file.items()), 1):
        bar.set_description(f"{quantize} load: shard {i}/{len(by_file)}")
        with _open(file) as f:
            f = view(f, file)
            for ours in names:
                module_name, _, leaf = ours.rpartition(".")
                module = model.get_submodule(module_name)
                if isinstance(module, QuantizedExpertBank):
                    want = (module.num_experts, module.dim, 2 * module.hidden) if leaf == "gate_up_proj" else \
                        (module.num_experts, module.hidden, module.dim)
                    t = _ExpertSlices(f, file, found[ours], want, device)  # read one expert at a time
                    report += (module.load_gate_up if leaf == "gate_up_proj" else module.load_down)(t, found[ours])
                elif isinstance(module, QuantizedLinear):
                    t = _read_tensor(f, file, found[ours], (module.out_features, module.in_features), device)
                    report.append(module.set_weight(t, found[ours]))
                else:
                    # copy: a tensor that aliased the memory-mapped shard would keep the whole file mapped
                    t = _read_tensor(f, file, found[ours], tuple(getattr(module, leaf).shape), device, dtype, copy=True)
                    dtype = t.dtype
                    setattr(module, leaf, nn.Parameter(t, requires_grad=False))
                del t  # the full-precision tensor goes here: only its quantized form stays
                _release_freed_memory()
        bar.update(file.stat().st_size)
    bar.close()
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_buffers()
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if left:
        raise CheckpointError(f"{quantize} load left tensors unfilled (a bug): {', '.join(left[:5])}")
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
    """The (lazy) slice of one tensor of an open shard, after checking its shape against the config's and that it
    is stored as a float."""
    with _reading(file, hf_name):
        sl = f.get_slice(hf_name)
        got, dtype = tuple(sl.get_shape()), sl.get_dtype()
    if got != tuple(want):
        raise CheckpointError(f"{file.name}: tensor {hf_name} has shape {list(got)}, expected {list(want)} from config.json")
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{file.name}: tensor {hf_name} is stored as {dtype}, but a weight must be a float "
                              f"({', '.join(FLOAT_DTYPES)}): casting it would change its values")
    return sl


def _check_finite(t: torch.Tensor, file: Path, hf_name: str) -> None:
    """Refuse NaN and inf weights, naming the tensor. Cost: one min/max reduction over the tensor just read (NaN
    propagates through both, ±inf shows in one), with no temporary the size of the tensor: one more read of each
    weight, checked once, as it arrives. The count for the message is only computed when there is something to
    report. (bench/load_checks.py measures what it adds to loading.)"""
    if t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    if torch.isfinite(lo) and torch.isfinite(hi):
        return
    bad = int(t.numel() - torch.isfinite(t).sum())
    raise CheckpointError(f"{file.name}: tensor {hf_name} holds {bad:,} non-finite value(s) (NaN or inf) "
                          f"out of {t.numel():,}")


def _read_tensor(f, file: Path, hf_name: str, want: tuple, device, dtype: torch.dtype | None = None,
                 copy: bool = False) -> torch.Tensor:
    """One whole tensor from an open shard, placed on `device` in `dtype` (None: as stored) and checked there
    (shape, float, finite); corrupt data is a CheckpointError naming it."""
    _checked_slice(f, file, hf_name, want)
    with _reading(file, hf_name):
        t = f.get_tensor(hf_name)
    t = t.to(device=device, dtype=dtype or t.dtype, copy=copy)
    _check_finite(t, file, hf_name)
    return t


class _ExpertSlices:
    """An expert tensor [E, …] of an open shard, read one expert at a time: `x[e]` reads expert e from the mapped
    file and moves it to `device`. So quantizing a layer's experts holds one expert in full precision, not all E
    (Scout, by arithmetic: 168 MB instead of 2.7 GB for a gate_up_proj)."""

    def __init__(self, f, file: Path, hf_name: str, want: tuple, device: torch.device):
        self.file, self.hf_name, self.device = file, hf_name, device
        self.slice, self.shape = _checked_slice(f, file, hf_name, want), torch.Size(want)

    def __getitem__(self, e: int) -> torch.Tensor:
        with _reading(self.file, self.hf_name):
            t = self.slice[e].to(self.device)
        _check_finite(t, self.file, f"{self.hf_name} (expert {e})")
        return t


def _hf_name(name: str, vision: bool) -> str:
    """minillama4 parameter name → HF tensor name (Llama4ForCausalLM, or Llama4ForConditionalGeneration with vision)."""
    if vision:
        if name.startswith(_VISION_PREFIXES):
            return name
        return "language_model." + (name if name == "lm_head.weight" else "model." + name)
    return name if name == "lm_head.weight" else "model." + name


_SHARD = re.compile(r"^model-\d+-of-\d+\.safetensors$")


def is_checkpoint_file(name: str) -> bool:
    """The files a save writes and therefore replaces: config.json, model.safetensors, the sharded index and
    model-NNNNN-of-NNNNN.safetensors shards. Every other file in a checkpoint folder (tokenizer.json,
    generation_config.json, a README, the user's own files) is left alone by a save."""
    return name in ("config.json", SINGLE_FILE, INDEX_FILE) or bool(_SHARD.match(name))


def save_pretrained(model: Llama4, path: str | os.PathLike, max_shard_bytes: int | None = None) -> None:
    """Write `config.json` and safetensors weights in the layout that transformers loads: Llama4ForCausalLM, or
    Llama4ForConditionalGeneration for a model with a vision_config.
    With max_shard_bytes, split into `model-0000i-of-0000n.safetensors` shards plus an index.

    Atomic: the checkpoint is written into a new folder beside `path`, then put in its place (`_replace_folder`).
    A save that fails midway leaves the old checkpoint untouched; a finished save holds only the new checkpoint's
    files (no shard or index of an earlier save survives) plus the other files the folder had (tokenizer.json …)."""
    path = Path(path).resolve()  # a symlink to a folder: replace the folder it points to
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder; save_pretrained writes a checkpoint folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name(f".{path.name}.saving-{uuid.uuid4().hex[:8]}")
    new.mkdir()
    try:
        _write_checkpoint(model, new, max_shard_bytes)
        _replace_folder(new, path)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _write_checkpoint(model: Llama4, path: Path, max_shard_bytes: int | None) -> None:
    """config.json and the weights (one file, or shards plus an index) into the empty folder `path`."""
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


def _replace_folder(new: Path, path: Path) -> None:
    """Put the finished checkpoint folder `new` at `path` with two renames (old aside, new in), then move the old
    folder's other files (`is_checkpoint_file` false) into the new one and delete the old checkpoint files.
    If the process dies between the renames, the old checkpoint is complete in `.<name>.old-…` beside `path`;
    a file that cannot be moved back is reported and left there, never deleted. A folder that cannot be renamed
    (a mount point) is updated file by file instead (`_replace_files`)."""
    if not path.exists():
        new.rename(path)
        return
    shutil.copymode(path, new)
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(old)
    except OSError:
        _replace_files(new, path)
        return
    try:
        new.rename(path)
    except BaseException:
        old.rename(path)
        raise
    if Path.cwd().resolve() == old.resolve():  # the process worked in the folder: follow it to the new one
        os.chdir(path)
    for entry in old.iterdir():
        if not is_checkpoint_file(entry.name):
            try:
                entry.rename(path / entry.name)
            except OSError as e:
                raise OSError(f"saved the checkpoint to {path}, but could not move {entry.name} back into it "
                              f"({e}); it is in {old}") from None
    shutil.rmtree(old)


def _replace_files(new: Path, path: Path) -> None:
    """The fallback: move the new checkpoint's files into `path` (weights first, config.json last), then delete the
    earlier save's checkpoint files that the new one did not write. Each file is replaced whole, but a crash during
    these moves can leave a mix of the two saves (the swap of whole folders cannot)."""
    names = sorted((f.name for f in new.iterdir()), key=lambda n: (n == INDEX_FILE, n == "config.json"))
    for name in names:
        shutil.move(new / name, path / name)
    for entry in path.iterdir():
        if is_checkpoint_file(entry.name) and entry.name not in names:
            entry.unlink()
    new.rmdir()
