"""Loading: the layouts, and every way a checkpoint can be wrong, each with a clear error."""

import json
import shutil

import pytest
import torch

import minillama4
from minillama4.checkpoint import CheckpointError
from conftest import rewrite_checkpoint as _rewrite, write_hf_checkpoint


def test_conditional_layout_loads_the_text_model_and_the_vision_tower(tmp_path):
    path = write_hf_checkpoint(tmp_path / "c", layout="conditional")
    m = minillama4.from_pretrained(path)
    assert isinstance(m, minillama4.Llama4) and m.config.num_hidden_layers == 4
    assert m.config.vision_config is not None and m.vision_model is not None and m.multi_modal_projector is not None


def test_missing_tensor(scout_ckpt):
    _rewrite(scout_ckpt, lambda sd: sd.pop("model.layers.2.feed_forward.experts.down_proj"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): layers.2.feed_forward.experts.down_proj"):
        minillama4.from_pretrained(scout_ckpt)


def test_unexpected_tensor(scout_ckpt):
    _rewrite(scout_ckpt, lambda sd: sd.__setitem__("model.layers.0.self_attn.q_norm.weight", torch.ones(16)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\).*model.layers.0.self_attn.q_norm.weight"):
        minillama4.from_pretrained(scout_ckpt)


def test_wrong_shape_names_key_expected_and_got(scout_ckpt):
    _rewrite(scout_ckpt, lambda sd: sd.__setitem__("model.layers.1.feed_forward.experts.gate_up_proj", torch.zeros(4, 64, 48)))
    with pytest.raises(CheckpointError, match=r"model.layers.1.feed_forward.experts.gate_up_proj has shape \[4, 64, 48\], "
                                              r"expected \[4, 64, 96\]"):
        minillama4.from_pretrained(scout_ckpt)


def test_config_that_disagrees_with_the_weights(scout_ckpt):
    cfg = json.loads((scout_ckpt / "config.json").read_text())
    cfg["num_local_experts"] = 8
    (scout_ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"has shape \[4, \d+, \d+\], expected \[8, "):
        minillama4.from_pretrained(scout_ckpt)


def test_truncated_file(scout_ckpt):
    f = scout_ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        minillama4.from_pretrained(scout_ckpt)


def test_garbage_header(scout_ckpt):
    (scout_ckpt / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        minillama4.from_pretrained(scout_ckpt)


def test_missing_shard_and_index_pointing_at_missing_key(tmp_path):
    path = write_hf_checkpoint(tmp_path / "s", max_shard_size="40KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.self_attn.q_proj.weight"] = next(iter(index["weight_map"].values()))
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="unexpected tensor.*model.layers.9.self_attn.q_proj.weight"):
        minillama4.from_pretrained(path)
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing: {shard.name}"):
        minillama4.from_pretrained(path)


def test_index_names_a_tensor_its_shard_lacks(tmp_path):
    path = write_hf_checkpoint(tmp_path / "s", max_shard_size="40KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = "model.norm.weight"
    index["weight_map"][name] = next(s for s in shards if s != index["weight_map"][name])
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="cannot read tensor model.norm.weight"):
        minillama4.from_pretrained(path)


def test_pickles_are_refused(tmp_path, scout_ckpt):
    pth = tmp_path / "consolidated.00.pth"
    torch.save({"x": torch.zeros(1)}, pth)
    with pytest.raises(CheckpointError, match="pickle-based file refused"):
        minillama4.from_pretrained(pth)
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(scout_ckpt / "config.json", d)
    torch.save({"x": torch.zeros(1)}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle-based weights.*pytorch_model.bin"):
        minillama4.from_pretrained(d)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        minillama4.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        minillama4.from_pretrained(tmp_path / "empty")


def test_unknown_quantize_is_refused(scout_ckpt):  # int4 itself: tests/test_quant.py, tests/test_streaming.py
    with pytest.raises(ValueError, match="quantize='nf4' is not supported; choose None, 'int4' or 'fp8'"):
        minillama4.from_pretrained(scout_ckpt, quantize="nf4")


def test_loading_keeps_one_copy_of_the_weights(scout_ckpt):
    m = minillama4.from_pretrained(scout_ckpt)
    assert all(p.device.type == "cpu" and not p.is_meta for p in m.parameters())
    assert m.inv_freq.device.type == "cpu" and not m.inv_freq.is_meta
