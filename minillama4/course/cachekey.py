"""Cache keys that follow the code: a cached toy model, stage or data file is stored under a key that hashes
everything that produced it, so a stale entry is never found (it is trained again instead).

    key = cache_key({"recipe": ..., "profile": ..., "data": digest}, "minillama4.course.zoo")

A key hashes three things:

* the caller's payload: the recipe, the profile, a digest of the data;
* the code: the syntax tree of the named modules and of every minillama4 module they import, directly or through
  others (function-level imports included, and the packages' `__init__` files that importing runs). Comments,
  docstrings and formatting are not in the tree, so editing them keeps the key; any change that can alter behaviour
  changes it;
* the runtime the numbers depend on (`runtime()`): the torch version, torch's intra-op thread count (a sum split
  over more threads rounds differently, and a few hundred training steps turn that into a different model), ATen's
  CPU kernel set and MKL's reproducibility mode.

Computing a key is cheap: each file is parsed once per process (again only if its content changed), 0.2 s of CPU
for the post-training pipeline's 30 modules; later keys only read the files (a few milliseconds).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch

PACKAGE = "minillama4"
ROOT = Path(__file__).resolve().parents[1]  # the minillama4/ directory


def cache_key(payload: dict, *modules: str, runtime_dependent: bool = True) -> str:
    """12 hex digits of sha256 over the payload, `source_hash(*modules)` and, unless the artifact is computed
    without floating-point arithmetic (`runtime_dependent=False`, e.g. tokenized data), `runtime()`."""
    blob = {"payload": payload, "code": source_hash(*modules)}
    if runtime_dependent:
        blob["runtime"] = runtime()
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_json(folder: str, name: str, payload: dict, compute, module: str):
    """compute() once per key (`cache_key(payload, module)`: the payload, a JSON-able dict of everything the result
    depends on, and the code of `module` with what it imports), stored as `cache_dir()/folder/name-KEY.json`, then
    read from disk. Two processes asking at once: one computes, the other waits for it and reads."""
    from .data import cache_dir  # data.py imports this module

    key = cache_key(json.loads(json.dumps(payload, sort_keys=True, default=str)), module)
    path = cache_dir() / folder / f"{name}-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(compute()))
            tmp.replace(path)  # atomic: a reader never sees half a file
    return json.loads(path.read_text())


def runtime() -> dict:
    """What, besides code and data, decides the numbers a CPU training run produces."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR")}


def source_hash(*modules: str) -> str:
    """sha256 of the syntax trees of `modules` (dotted names inside minillama4) and everything they import from it."""
    h = hashlib.sha256()
    for name in sorted(imported_modules(*modules)):
        h.update(name.encode() + b"\0" + _parsed(module_file(name))[0].encode() + b"\0")
    return h.hexdigest()


def imported_modules(*modules: str) -> set[str]:
    """The named modules and every minillama4 module that importing and running them imports, transitively."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)  # a clear error for a name that is not a module of the package
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a/__init__, a/b/__init__
        todo += _parsed(path)[1]
    return seen


def module_file(name: str) -> Path:
    """The source file of a dotted module name inside the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{name!r} is not a module of {PACKAGE}")
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise ValueError(f"no module {name!r} in {ROOT}")


def _parsed(path: Path) -> tuple[str, tuple[str, ...]]:
    return _parse(path, path.read_bytes())  # reading is cheap; parsing happens once per content


@lru_cache(maxsize=None)
def _parse(path: Path, source: bytes) -> tuple[str, tuple[str, ...]]:
    """(the syntax tree without docstrings, as text; the package modules the file imports, at any depth)."""
    tree = ast.parse(source)
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) and \
                isinstance(node.body[0].value.value, str):
            node.body = node.body[1:]  # the docstring
        elif isinstance(node, ast.Import):
            imports += [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            imports += _from_import(node, package)
    return ast.dump(tree), tuple(imports)


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_import(node: ast.ImportFrom, package: list[str]) -> list[str]:
    """The package modules `from X import a, b` runs: X, and X.a, X.b where those are modules (`from . import zoo`)."""
    if node.level:  # relative to the importing file's package
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != PACKAGE:
        return []
    if module_file(base).name != "__init__.py":
        return [base]
    return [base] + [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")]


def _is_module(name: str) -> bool:
    try:
        module_file(name)
        return True
    except ValueError:
        return False
