import pytest
import torch

from minillama4 import Llama4Config
from minillama4.balancing import (AuxFreeBalancer, bias_update, expert_counts, load_imbalance, max_violation,
                                  moe_routers)
from minillama4.model import Llama4
from minillama4.router import Router
from minillama4.train import TrainConfig, train


def test_expert_counts_and_bias_update_direction():
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 0]])  # loads 4, 2, 1, 1 (mean 2)
    counts = expert_counts(idx, 5)
    assert counts.tolist() == [4, 2, 1, 1, 0]
    b = torch.tensor([0.5, 0.0, 0.0, -0.1, 0.0])
    new = bias_update(b, counts, 0.1)  # mean 1.6: expert 0 over, 1 over, 2-4 under
    torch.testing.assert_close(new, torch.tensor([0.4, -0.1, 0.1, 0.0, 0.1]))
    assert torch.equal(b, torch.tensor([0.5, 0.0, 0.0, -0.1, 0.0]))  # not modified in place
    # exactly mean load → unchanged
    torch.testing.assert_close(bias_update(torch.zeros(3), torch.tensor([2, 2, 2]), 0.1), torch.zeros(3))


def test_load_imbalance():
    assert load_imbalance([0.25] * 4).item() == pytest.approx(1.0)
    assert load_imbalance([1.0, 0, 0, 0]).item() == pytest.approx(4.0)
    per_layer = load_imbalance([[0.5, 0.5, 0, 0], [10, 10, 10, 10]])
    torch.testing.assert_close(per_layer, torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert max_violation([0.4, 0.2, 0.2, 0.2]).item() == pytest.approx(0.6)
    with pytest.raises(ValueError):
        load_imbalance(3.0)


def _tiny(moe_layers=None):
    cfg = Llama4Config.preset("toy").replace(vocab_size=64, hidden_size=32, num_attention_heads=2,
                                             num_key_value_heads=1, head_dim=16, intermediate_size=32,
                                             intermediate_size_mlp=64, num_hidden_layers=2)
    if moe_layers is not None:
        cfg = cfg.replace(moe_layers=moe_layers)
    torch.manual_seed(0)
    return Llama4(cfg)


def test_balancer_moves_biases_towards_balance_and_only_changes_selection():
    model = _tiny()
    routers = moe_routers(model)
    assert len(routers) == 2 and all(isinstance(r, Router) for r in routers)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g) + 0.5
    with torch.no_grad():  # a collapsed router: expert 0 wins almost every token
        for r in routers:
            r.weight.normal_(0, 0.3, generator=g)
            r.weight[0] += 1.0
    bal = AuxFreeBalancer(model, rate=0.5)
    before = [load_imbalance(expert_counts(r(x).indices, 4).float()).item() for r in routers]
    for step in range(40):
        bal(step, [r(x) for r in routers])
    after = [load_imbalance(expert_counts(r(x).indices, 4).float()).item() for r in routers]
    assert len(bal.history) == 40 and bal.biases().shape == (2, 4)
    assert all(b > 3.5 for b in before) and all(a < 1.5 for a in after)
    assert all(bal.biases()[:, 0] < 0)  # the overloaded expert was pushed down
    # scores are σ(raw logit of the chosen expert), never σ(logit + bias)
    out = routers[0](x)
    assert not torch.equal(out.indices, out.logits.topk(1, -1).indices)  # the bias changed some choices
    torch.testing.assert_close(out.scores, torch.sigmoid(out.logits.gather(-1, out.indices)))


def test_balancer_as_train_on_step_and_errors():
    model = _tiny()
    bal = AuxFreeBalancer(model, rate=0.01)
    ids = torch.randint(0, 64, (2000,), generator=torch.Generator().manual_seed(1))
    cfg = TrainConfig(steps=3, batch_size=2, seq_len=16, warmup_steps=1, eval_every=3, eval_batches=1,
                      balance_coef=0.0)
    train(model, ids, ids, cfg, progress=False, on_step=bal)
    assert len(bal.history) == 3
    assert 0 < bal.biases().abs().max().item() <= 0.03 + 1e-6  # at most 3 steps of ±rate
    with pytest.raises(ValueError, match="no MoE layer"):
        AuxFreeBalancer(_tiny(moe_layers=[]))
    with pytest.raises(ValueError, match="rate"):
        AuxFreeBalancer(model, rate=-1.0)
    with pytest.raises(ValueError, match="routing for 1"):
        bal(0, [None])
