"""Cache keys follow the code, the data and the runtime: an edit that can change a cached result changes its key, so
the stale entry is trained again instead of read. The edits are made to a copy of the package in a temporary folder."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import minillama4
from minillama4.course import cachekey, data, shapes, zoo
from minillama4.train import TrainConfig, posttrain

PACKAGE = Path(minillama4.__file__).parent


@pytest.fixture
def copy(tmp_path, monkeypatch):
    """A copy of the package's source that the keys are computed from; edit(path, old, new) changes one of its files."""
    root = tmp_path / "minillama4"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    monkeypatch.setattr(cachekey, "ROOT", root)
    monkeypatch.setenv("MINILLAMA4_CACHE", str(tmp_path / "cache"))

    def edit(rel, old, new):
        f = root / rel
        text = f.read_text()
        assert text.count(old) == 1, f"{old!r} is not in {rel} exactly once"
        f.write_text(text.replace(old, new))
    return edit


def keys():
    """The key of every kind of cached artifact, computed from the source cachekey.ROOT points at."""
    recipe = zoo.recipes("ci")["mini-scout"]
    ids = torch.arange(1000)
    base = zoo.cache_path(recipe, "ci", ids)
    r = posttrain.recipe("ci")
    config, tc = shapes.recipes("ci")["mini-vlm"]
    data.course_tokens("val")  # encoded (again) when its key is new
    encoded = sorted(p.stat().st_mtime_ns for p in (data.cache_dir() / "data").glob("val-*.npz"))
    return {"zoo": base.name, "sft": posttrain._stage_key(r, "sft", base, "ci"),
            "dpo": posttrain._stage_key(r, "dpo", base, "ci"), "shapes": shapes._key(config, tc, "ci"),
            "data": len(encoded)}


def changed(before, after):
    return {k for k in before if before[k] != after[k]}


def test_a_change_of_behaviour_anywhere_in_the_training_code_changes_the_key(copy):
    k0 = keys()
    copy("train/pretrain.py", "0.5 * (cfg.lr - cfg.min_lr)", "0.4 * (cfg.lr - cfg.min_lr)")  # the LR schedule
    k1 = keys()
    assert changed(k0, k1) == {"zoo", "sft", "dpo", "shapes"}
    copy("norm.py", "rsqrt(", "rsqrt(1e-12 + ")  # a model-side module, imported by the model, not by the loop
    k2 = keys()
    assert changed(k1, k2) == {"zoo", "sft", "dpo", "shapes", "data"}  # importing course.data runs minillama4/__init__
    copy("train/rl.py", "def _mean(", "def _mean_of(")  # post-training only: the base model is kept
    k3 = keys()
    assert changed(k2, k3) == {"sft", "dpo"}
    copy("image.py", "import numpy as np", "import numpy as np\nSCALE = 1")  # what only the VLM runs
    k4 = keys()
    assert changed(k3, k4) == {"shapes"}
    copy("course/tokenizer.py", "def encode(", "def encode_(")  # the encoding of the cached corpus
    assert "data" in changed(k4, keys())


def test_comments_docstrings_and_formatting_keep_the_key(copy):
    k0 = keys()
    copy("train/pretrain.py", "def lr_at(step: int, cfg: TrainConfig) -> float:\n",
         "def lr_at(step: int,\n          cfg: TrainConfig) -> float:  # reformatted, commented\n")
    copy("train/pretrain.py", '"""Linear warm-up, then cosine decay from lr to min_lr."""', '"""Reworded."""')
    copy("model.py", "\nimport torch\n", "\n# a comment\nimport torch\n\n")
    assert keys() == k0
    copy("course/viz.py", "import io", "import io\nimport os")  # a module no cached artifact runs
    assert keys() == k0


def test_the_key_follows_the_recipe_the_data_the_seed_and_the_runtime(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    recipe = zoo.recipes("ci")["mini-scout"]
    ids = torch.arange(1000)
    key = lambda r=recipe, profile="ci", data=ids: zoo.cache_path(r, profile, data).name.rsplit("-", 1)[1]  # noqa: E731
    k0 = key()
    assert key(r=zoo.recipes("ci", seed=1)["mini-scout"]) != k0
    assert key(r=zoo.recipes("ci")["mini-dense"]) != k0
    for name in ("mini-vlm", "mini-vlm-blind"):  # the vision recipes: the seed is all that differs, and in the key
        (c0, t0), (c1, t1) = shapes.recipes("ci")[name], shapes.recipes("ci", seed=1)[name]
        assert c0 == c1 and (t0.seed, t1.seed) == (0, 1) and replace(t1, seed=0) == t0
        assert shapes._key(c1, t1, "ci") != shapes._key(c0, t0, "ci")
    assert key(profile="laptop") != k0
    ids2 = ids.clone()
    ids2[-1] += 1  # the last token of the stream: the whole stream is hashed
    assert key(data=ids2) != k0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # a sum over more threads rounds differently
        assert key() != k0
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert key() != k0
    monkeypatch.delenv("MKL_CBWR")
    assert key() == k0


def test_a_stale_entry_is_trained_again_not_read(copy, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLAMA4_CACHE", str(tmp_path / "cache"))
    cfg = minillama4.Llama4Config.preset("toy").replace(hidden_size=32, head_dim=8, intermediate_size=32,
                                                        num_hidden_layers=2)
    tiny = zoo.Recipe("tiny", "a test recipe", cfg, TrainConfig(steps=2, batch_size=2, seq_len=16, eval_every=2,
                                                                 eval_batches=1, warmup_steps=1))
    monkeypatch.setattr(zoo, "recipes", lambda profile=None, seed=0: {"tiny": tiny})
    calls = []
    real_train = zoo.train
    monkeypatch.setattr(zoo, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    first = zoo.pretrained_path("tiny", "ci", verbose=False)
    assert zoo.pretrained_path("tiny", "ci", verbose=False) == first and calls == [1]  # cached
    copy("train/pretrain.py", "opt.step()", "opt.step()\n    opt.step()")  # the training loop changes
    second = zoo.pretrained_path("tiny", "ci", verbose=False)
    assert second != first and calls == [1, 1] and (second / "history.json").is_file()


def test_the_key_covers_every_package_module_training_actually_loads(tmp_path):
    """The import graph is read from the source; whatever a real (tiny) training run loads must be in it."""
    script = f"""
import json, sys, torch
import minillama4
from minillama4.course import zoo
from minillama4.course.cachekey import imported_modules
from minillama4.train import TrainConfig
cfg = minillama4.Llama4Config.preset("toy").replace(hidden_size=32, head_dim=8, intermediate_size=32, num_hidden_layers=2)
tiny = zoo.Recipe("tiny", "", cfg, TrainConfig(steps=1, batch_size=2, seq_len=16, eval_every=1, eval_batches=1, warmup_steps=1))
zoo.recipes = lambda profile=None, seed=0: {{"tiny": tiny}}
zoo.pretrained("tiny", "ci", verbose=False)
loaded = {{m for m in sys.modules if m.split(".")[0] == "minillama4"}}
print(json.dumps(sorted(loaded - imported_modules("minillama4.course.zoo"))))
"""
    env = dict(os.environ, MINILLAMA4_CACHE=str(tmp_path), PYTHONPATH=str(PACKAGE.parent))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_the_import_graph_follows_function_level_imports_and_packages():
    mods = cachekey.imported_modules("minillama4.train.posttrain")
    assert "minillama4.course.zoo" in mods  # `from ..course import zoo`, inside a function
    assert {"minillama4", "minillama4.train", "minillama4.course"} <= mods  # packages whose __init__ importing runs
    assert {"minillama4.train.pretrain", "minillama4.moe", "minillama4.course.tasks"} <= mods
    assert not {"minillama4.course.viz", "minillama4.cli", "minillama4.balancing"} & mods


def test_bad_module_names_are_clear_errors():
    with pytest.raises(ValueError, match="not a module of minillama4"):
        cachekey.source_hash("torch.nn")
    with pytest.raises(ValueError, match="no module 'minillama4.nope'"):
        cachekey.source_hash("minillama4.nope")


def test_the_metap_sweep_key_follows_metap_rules_but_not_the_grid(copy):
    """Chapter 13's learning-rate sweep caches each run on its own: widening the grid keeps them, another seed, a
    changed MetaP rule or a change in the experiment's own file trains them again."""
    import dataclasses

    from minillama4.course import metap_experiments as mx

    spec = mx.sweep_spec("ci")
    before = mx._sweep_dir(spec, "ci")
    assert mx._sweep_dir(dataclasses.replace(spec, lrs=spec.lrs[1:]), "ci") == before
    assert mx._sweep_dir(dataclasses.replace(spec, steps=spec.steps + 1), "ci") != before
    assert mx._sweep_dir(mx.sweep_spec("ci", seed=1), "ci") != before  # another seed, other runs
    copy("metap.py", '"hidden": 1.0 / width_mult,', '"hidden": 1.0,')  # the hidden weights' lr × 1/m switched off
    after_rule = mx._sweep_dir(spec, "ci")
    assert after_rule != before
    copy("course/metap_experiments.py", "intermediate_size=2 * width,", "intermediate_size=3 * width,")  # its own file
    assert mx._sweep_dir(spec, "ci") != after_rule
