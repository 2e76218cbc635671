import subprocess
import sys

import torch

import minillama4
from minillama4.cli import main


def test_info_preset(capsys):
    assert main(["info", "--preset", "scout"]) == 0
    out = capsys.readouterr().out
    assert "107,769,861,120 total" in out and "48 KiB/token" in out


def test_info_checkpoint_and_errors(scout_ckpt, tmp_path, capsys):
    assert main(["info", str(scout_ckpt)]) == 0
    assert "Mr Mr Mr Mn" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_generate_prints_the_greedy_continuation(scout_ckpt, capsys):
    assert main(["generate", str(scout_ckpt), "--ids", "5", "7", "9", "--max-new-tokens", "12"]) == 0
    got = [int(t) for t in capsys.readouterr().out.split()]
    model = minillama4.from_pretrained(scout_ckpt)
    want = model.generate(torch.tensor([[5, 7, 9]]), 12, eos_token_id=model.config.eos_token_id)[0, 3:].tolist()
    assert got == want and len(got) >= 1


def test_generate_with_compile_prints_the_same_tokens(scout_ckpt, capsys, quick_compile):
    """--compile: the decode step goes through torch.compile (whole graph, the default compiler) and the greedy
    tokens are the eager ones."""
    assert main(["generate", str(scout_ckpt), "--ids", "5", "7", "9", "--max-new-tokens", "12"]) == 0
    want = capsys.readouterr().out
    assert main(["generate", str(scout_ckpt), "--ids", "5", "7", "9", "--max-new-tokens", "12", "--compile"]) == 0
    assert capsys.readouterr().out == want
    assert quick_compile == [{"fullgraph": True, "backend": "inductor"}]


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "minillama4", "info", "--preset", "toy"], capture_output=True, text=True)
    assert r.returncode == 0 and "layer plan" in r.stdout
