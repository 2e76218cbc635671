import math

import pytest
import torch

import minillama4
from minillama4.losses import load_balancing_loss, router_z_loss
from minillama4.course.profile import by_profile, current_profile
from minillama4.train import TrainConfig, evaluate, get_batch, lr_at, train


@pytest.mark.parametrize("k", [1, 2, 3])
def test_load_balancing_is_one_when_uniform_and_E_when_collapsed(k):
    E, T = 6, 60
    # uniform: every expert is chosen equally often and the softmax is flat
    uniform = torch.zeros(T, E)
    assert load_balancing_loss(uniform, k).item() == pytest.approx(1.0)
    # balanced choices with peaked probabilities: still 1 (f uniform)
    logits = torch.full((T, E), -5.0)
    for t in range(T):
        for j in range(k):
            logits[t, (t + j) % E] = 5.0 - j
    assert load_balancing_loss(logits, k).item() == pytest.approx(1.0, abs=1e-5)
    # collapsed: all tokens put all probability on the same k experts → E/k · (sum of their P) ≈ E/k
    collapsed = torch.full((T, E), -20.0)
    collapsed[:, :k] = 20.0
    assert load_balancing_loss(collapsed, k).item() == pytest.approx(E / k, rel=1e-4)


def test_load_balancing_matches_its_formula_and_has_gradient():
    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = load_balancing_loss(logits, 2)
    idx = logits.topk(2, -1).indices
    f = torch.bincount(idx.flatten(), minlength=8).float() / idx.numel()
    P = logits.softmax(-1).mean(0)
    assert loss.item() == pytest.approx(8 * (f * P).sum().item(), rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_router_z_loss_formula():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    assert router_z_loss(logits).item() == pytest.approx((torch.logsumexp(logits, -1) ** 2).mean().item(), rel=1e-6)


def test_profiles(monkeypatch):
    monkeypatch.setenv("MINILLAMA4_PROFILE", "ci")
    assert current_profile() == "ci" and by_profile(1, 2) == 1 and by_profile(1, 2, profile="gpu") == 2
    monkeypatch.setenv("MINILLAMA4_PROFILE", "cluster")
    with pytest.raises(ValueError, match="MINILLAMA4_PROFILE='cluster'"):
        current_profile()


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))


def test_get_batch_shifts_by_one_and_is_seeded():
    ids = torch.arange(1000)
    x, y = get_batch(ids, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and torch.equal(y, x + 1)
    x2, _ = get_batch(ids, 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too short"):
        get_batch(torch.arange(10), 1, 16, torch.Generator())


def _pattern_stream(n=6000, vocab=64):
    g = torch.Generator().manual_seed(0)
    motifs = torch.randint(3, vocab, (8, 12), generator=g)
    return motifs[torch.randint(0, 8, (n // 12,), generator=g)].flatten()


def test_training_learns_a_patterned_stream_and_records_history():
    cfg_m = minillama4.Llama4Config.preset("toy").replace(vocab_size=64, hidden_size=64, head_dim=16,
                                                          intermediate_size=64, attention_chunk_size=16)
    torch.manual_seed(0)
    model = minillama4.Llama4(cfg_m)
    data = _pattern_stream()
    tc = TrainConfig(steps=60, batch_size=8, seq_len=32, lr=1e-2, min_lr=1e-3, warmup_steps=5, eval_every=20,
                     eval_batches=2)
    before, _ = evaluate(model, data, tc)
    seen = []
    hist = train(model, data, data, tc, progress=False, on_eval=lambda step, h: seen.append(step))
    assert seen == [20, 40, 60] and hist.eval_steps == [20, 40, 60] and len(hist.train_loss) == 60
    assert before > math.log(64) - 0.5 and hist.val_loss[-1] < 0.6 * before  # it learned the motifs
    assert len(hist.expert_load[-1]) == len(cfg_m.moe_layers)
    for layer in hist.expert_load[-1]:
        assert sum(layer) == pytest.approx(1.0) and len(layer) == cfg_m.num_local_experts
