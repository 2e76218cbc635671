import pytest
import torch
from conftest import hand_adamw_step

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


def _notebook_loop(model, tc, train_ids, val_ids, rate, steps=None):
    """Chapter 03's `train_moe`, written out as in the notebook (first `steps` steps of it, all by default):
    → train losses, [[step, val loss]], loads per evaluation, biases after each step."""
    import torch.nn.functional as F

    from minillama4.losses import load_balancing_loss
    from minillama4.train import evaluate, get_batch, lr_at, make_optimizer

    routers, opt = moe_routers(model), make_optimizer(model, tc)
    g = torch.Generator().manual_seed(tc.seed)
    losses, evals, loads, biases = [], [], [], []
    model.train()
    for step in range(tc.steps if steps is None else steps):
        x_BT, y_BT = get_batch(train_ids, tc.batch_size, tc.seq_len, g)
        logits_BTV, routing = model(x_BT, return_routing=True)
        ce = F.cross_entropy(logits_BTV.flatten(0, 1).float(), y_BT.flatten())
        loss = ce + tc.balance_coef * torch.stack([load_balancing_loss(r.logits, r.indices.shape[-1])
                                                   for r in routing]).mean() if tc.balance_coef else ce
        hand_adamw_step(model, opt, loss, lr_at(step, tc), tc.grad_clip)
        losses.append(ce.item())
        if rate:
            with torch.no_grad():
                for router, r in zip(routers, routing):
                    load_E = torch.bincount(r.indices.flatten(), minlength=router.selection_bias.numel()).float()
                    router.selection_bias += rate * torch.sign(load_E.mean() - load_E)
            biases.append([router.selection_bias.tolist() for router in routers])
        if (step + 1) % tc.eval_every == 0 or step + 1 == tc.steps:
            val_loss, load = evaluate(model, val_ids, tc)
            evals.append([step + 1, val_loss])
            loads.append(load)
    return losses, evals, loads, biases or None


@pytest.mark.parametrize("coef, rate", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.05)])
def test_the_cached_experiments_runs_are_the_notebook_loop(coef, rate):
    """balancing_experiments.run_variant (the package's train + AuxFreeBalancer) gives exactly what chapter 03's
    loop gives: every train loss, validation loss, load and bias."""
    from minillama4.course.balancing_experiments import run_variant

    config = _tiny().config
    ids = torch.randint(0, 64, (4000,), generator=torch.Generator().manual_seed(1))
    tc = TrainConfig(steps=6, batch_size=4, seq_len=16, warmup_steps=2, eval_every=3, eval_batches=2,
                     balance_coef=coef)
    ours = run_variant(config, tc, ids, ids, rate=rate)
    torch.manual_seed(tc.seed)
    losses, evals, loads, biases = _notebook_loop(Llama4(config), tc, ids, ids, rate)
    assert ours == {"evals": evals, "loads": loads, "biases": biases, "train_loss": losses}
    assert (biases is None) == (rate == 0) and len(evals) == 2


def test_the_ci_comparison_starts_as_the_notebook_loop_and_its_claims_hold():
    """The cached ci result (trained once, then loaded): its first steps are the notebook loop's, to the bit, and
    what chapter 03 asserts about it holds."""
    import dataclasses

    import numpy as np

    from minillama4.course.balancing_experiments import RATE, VARIANTS, balancing_comparison, experiment_setup
    from minillama4.course.data import course_tokens

    run = balancing_comparison("ci")
    config, tc = experiment_setup("ci")
    assert list(run["variants"]) == list(VARIANTS) and run["train"]["steps"] == tc.steps
    train_ids = course_tokens("train", vocab_size=config.vocab_size).ids
    for name, (coef, rate) in VARIANTS.items():
        torch.manual_seed(tc.seed)
        losses, _, _, biases = _notebook_loop(Llama4(config), dataclasses.replace(tc, balance_coef=coef), train_ids,
                                              None, rate, steps=3)
        r = run["variants"][name]
        assert r["train_loss"][:3] == losses, name
        assert (r["biases"] is None) if not rate else r["biases"][:3] == biases, name
        assert len(r["train_loss"]) == tc.steps and r["evals"][-1][0] == tc.steps
    imb = {n: load_imbalance(r["loads"]).numpy() for n, r in run["variants"].items()}  # [evaluations, MoE layers]
    final = {n: v[-1].mean() for n, v in imb.items()}
    val = [r["evals"][-1][1] for r in run["variants"].values()]
    none_, switch, auxfree = final.values()
    assert switch < none_ and auxfree < none_  # both methods end better balanced than none
    assert imb["no balancing"][-1].max() > 1.3  # without balancing some expert gets > 1.3× its share
    assert max(val) - min(val) < 0.1  # balancing costs no visible validation loss
    moves = np.abs(np.diff(np.array(run["variants"][f"aux-free bias γ={RATE}"]["biases"]), axis=0, prepend=0))
    assert np.allclose(moves[moves > 1e-6], RATE, atol=1e-5)  # every bias move is ±γ (or 0)
