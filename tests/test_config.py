import dataclasses
import json

import pytest
import torch

import minillama4
from minillama4 import Llama4Config


def test_presets_are_valid_and_shaped_like_the_real_models():
    scout, mav, toy = (Llama4Config.preset(n) for n in ("scout", "maverick", "toy"))
    assert scout.moe_layers == list(range(48)) and scout.num_local_experts == 16 and scout.use_qk_norm
    assert mav.moe_layers == list(range(1, 48, 2)) and mav.num_local_experts == 128 and not mav.use_qk_norm
    nope = [i for i in range(48) if not scout.uses_rope(i)]
    assert nope == list(range(3, 48, 4))
    assert scout.rope_scaling["factor"] == 16.0 and mav.rope_scaling is None
    assert toy.num_hidden_layers == 4


@pytest.mark.parametrize("name", ["toy", "scout", "maverick"])
def test_parameter_arithmetic_equals_the_built_model(name):
    cfg = Llama4Config.preset(name)
    with torch.device("meta"):  # real Scout shapes, no memory
        model = minillama4.Llama4(cfg)
    assert cfg.num_parameters() == model.num_parameters()


def test_scout_and_maverick_parameter_counts():
    # 107.77 B text parameters of "109B" Scout (the rest is vision); ~17 B active per token
    scout, mav = Llama4Config.preset("scout"), Llama4Config.preset("maverick")
    assert round(scout.num_parameters() / 1e9, 2) == 107.77
    assert 16.9e9 < scout.num_parameters(active=True) < 17.2e9
    assert 395e9 < mav.num_parameters() < 401e9
    assert 16.9e9 < mav.num_parameters(active=True) < 17.2e9


RELEASE_SCOUT = {  # the quirks of the release-time Hub config.json (transformers 4.51 spelling)
    "model_type": "llama4_text", "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "vocab_size": 202048, "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
    "no_rope_layers": [], "attn_temperature_tuning": 4, "floor_scale": 8192, "attn_scale": 0.1,
    "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "use_qk_norm": True, "attention_chunk_size": 8192, "rms_norm_eps": 1e-5, "max_position_embeddings": 262144,
}


def test_from_hf_reads_release_quirks():
    cfg = Llama4Config.from_hf({"model_type": "llama4", "text_config": RELEASE_SCOUT})
    assert cfg.attn_temperature_tuning is True  # stored as the int 4
    assert cfg.no_rope_layers == [1, 1, 1, 0] * 12  # [] means: derive from the interval; 1 = uses RoPE
    assert cfg.moe_layers == list(range(48))
    assert cfg.rope_scaling["high_freq_factor"] == 4.0 and cfg.rope_theta == 500000.0


def test_from_hf_reads_transformers5_spelling_and_explicit_lists():
    hf = dict(RELEASE_SCOUT, num_hidden_layers=4, moe_layers=[1, 3], no_rope_layers=[0, 1, 1, 1],
              attn_temperature_tuning=False, rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 16.0,
                                                              "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                                                              "original_max_position_embeddings": 8192})
    del hf["rope_scaling"], hf["rope_theta"]
    cfg = Llama4Config.from_hf(hf)
    assert cfg.moe_layers == [1, 3] and not cfg.uses_rope(0) and cfg.uses_rope(3)
    assert cfg.rope_theta == 1e4 and cfg.rope_scaling["factor"] == 16.0 and not cfg.attn_temperature_tuning
    plain = Llama4Config.from_hf(dict(hf, rope_parameters={"rope_type": "default", "rope_theta": 5e5}))
    assert plain.rope_scaling is None and plain.rope_theta == 5e5


@pytest.mark.parametrize("name", ["toy", "scout", "maverick"])
def test_to_hf_round_trip_and_transformers_accepts_it(name):
    transformers = pytest.importorskip("transformers")
    cfg = Llama4Config.preset(name)
    hf = cfg.to_hf()
    assert Llama4Config.from_hf(json.loads(json.dumps(hf))) == cfg
    t = transformers.Llama4TextConfig(**{k: v for k, v in hf.items() if k != "architectures"})
    assert t.no_rope_layers == cfg.no_rope_layers and t.moe_layers == cfg.moe_layers
    assert Llama4Config.from_hf(t.to_dict()) == cfg


@pytest.mark.parametrize("change, words", [
    (dict(num_attention_heads=6), "must divide hidden_size"),
    (dict(num_key_value_heads=3), "must divide num_attention_heads"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok=5 > num_local_experts=4"),
    (dict(head_dim=31), "head_dim=31 must be even"),
    (dict(hidden_size=0), "hidden_size must be a positive int"),
    (dict(no_rope_layers=[1, 1, 2, 0]), "no_rope_layers"),
    (dict(moe_layers=[0, 7]), "moe_layers"),
    (dict(attention_chunk_size=0), "attention_chunk_size"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "not supported"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "lacks"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192}), "low_freq_factor <= high_freq_factor"),
])
def test_invalid_configs_raise_clear_errors(change, words):
    d = dataclasses.asdict(Llama4Config.preset("toy"))
    d.update(change)
    with pytest.raises(ValueError, match="invalid Llama4Config") as e:
        Llama4Config(**d)
    assert words in str(e.value)


def test_from_hf_rejects_other_models():
    with pytest.raises(ValueError, match="model_type 'llama'"):
        Llama4Config.from_hf({"model_type": "llama", "hidden_size": 64})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        Llama4Config.preset("behemoth")
