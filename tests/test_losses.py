"""The post-training losses against direct computations on random inputs; gradients go only where they should."""

import math

import pytest
import torch
import torch.nn.functional as F

from minillama4.losses import (IGNORE_INDEX, clipped_policy_loss, distillation_loss, dpo_loss, grpo_advantages,
                               kl_to_reference, load_balancing_loss, masked_mean, sequence_logprobs, token_logprobs)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _kd_direct(z, v, y, T, alpha):
    """Distillation loss written position by position with plain loops and probabilities (no log_softmax tricks)."""
    total, n = 0.0, 0
    for zz, vv, yy in zip(z.reshape(-1, z.shape[-1]).double(), v.reshape(-1, v.shape[-1]).double(), y.reshape(-1)):
        if yy.item() == -100:
            continue
        p = torch.exp(vv / T) / torch.exp(vv / T).sum()
        q = torch.exp(zz / T) / torch.exp(zz / T).sum()
        kl = (p * torch.log(p / q)).sum()
        ce = -torch.log(torch.exp(zz[yy]) / torch.exp(zz).sum())
        total += alpha * T * T * kl + (1 - alpha) * ce
        n += 1
    return total / n


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.3), (4.0, 0.9), (0.5, 1.0), (3.0, 0.0)])
def test_distillation_loss_matches_direct_computation_with_masking(T, alpha):
    g = _g(1)
    z = torch.randn(3, 7, 11, generator=g) * 2
    v = torch.randn(3, 7, 11, generator=g) * 2
    y = torch.randint(0, 11, (3, 7), generator=g)
    y[0, :3] = -100
    y[2, 5:] = -100
    got = distillation_loss(z, v, y, temperature=T, alpha=alpha)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(_kd_direct(z, v, y, T, alpha).item(), rel=1e-5, abs=1e-6)


def test_distillation_masked_positions_do_not_matter():
    g = _g(2)
    z, v = torch.randn(2, 6, 9, generator=g), torch.randn(2, 6, 9, generator=g)
    y = torch.randint(0, 9, (2, 6), generator=g)
    y[:, :2] = -100
    z2, v2 = z.clone(), v.clone()
    z2[:, :2] = 100 * torch.randn(2, 2, 9, generator=g)  # garbage where the label is ignored
    v2[:, :2] = -50.0
    a = distillation_loss(z, v, y, 2.0, 0.5)
    assert torch.equal(a, distillation_loss(z2, v2, y, 2.0, 0.5))
    # and it is the mean over the kept positions, not over all of them
    kept = distillation_loss(z[:, 2:], v[:, 2:], y[:, 2:], 2.0, 0.5)
    torch.testing.assert_close(a, kept)


def test_distillation_alpha_limits_are_ce_and_scaled_kl():
    g = _g(3)
    z, v = torch.randn(4, 5, 13, generator=g), torch.randn(4, 5, 13, generator=g)
    y = torch.randint(0, 13, (4, 5), generator=g)
    y[1] = -100
    keep = y != -100
    # alpha = 0: exactly cross-entropy with ignore_index, and the teacher does not matter
    ce = F.cross_entropy(z.reshape(-1, 13), y.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(distillation_loss(z, v, y, 3.0, 0.0), ce)
    torch.testing.assert_close(distillation_loss(z, torch.randn_like(v), y, 3.0, 0.0), ce)
    # alpha = 1: T² · KL(p_T ‖ q_T), torch's kl_div with the teacher as target
    T = 3.0
    kl = F.kl_div((z[keep] / T).log_softmax(-1), (v[keep] / T).log_softmax(-1), log_target=True,
                  reduction="batchmean")
    torch.testing.assert_close(distillation_loss(z, v, y, T, 1.0), T * T * kl)
    # labels do not matter at alpha = 1 (beyond which positions count)
    y2 = torch.where(keep, (y + 1) % 13, y)
    torch.testing.assert_close(distillation_loss(z, v, y2, T, 1.0), distillation_loss(z, v, y, T, 1.0))


def test_distillation_kl_is_zero_when_student_equals_teacher_and_t2_keeps_gradients_comparable():
    g = _g(4)
    v = torch.randn(64, 50, generator=g)
    y = torch.randint(0, 50, (64,), generator=g)
    for T in (0.5, 1.0, 4.0):
        assert distillation_loss(v.clone(), v, y, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # gradient of the soft term w.r.t. the student logits: with T² it stays O(1) as T grows; without, it shrinks ~1/T²
    z = torch.randn(64, 50, generator=g)
    norms = {}
    for T in (2.0, 8.0, 32.0):
        zz = z.clone().requires_grad_(True)
        distillation_loss(zz, v, y, T, 1.0).backward()
        norms[T] = zz.grad.norm().item()
    assert max(norms.values()) / min(norms.values()) < 1.5  # T² factor: the scale barely moves over 16× in T
    # ... and the limit is the logit-matching gradient (z − v)/(N·V) per logit after centring (Hinton §2.1)
    zc, vc = z - z.mean(-1, keepdim=True), v - v.mean(-1, keepdim=True)
    zz = zc.clone().requires_grad_(True)
    distillation_loss(zz, vc, y, 1000.0, 1.0).backward()
    torch.testing.assert_close(zz.grad, (zc - vc) / 50 / 64, rtol=1e-2, atol=1e-5)


def test_distillation_gradient_reaches_the_student_only():
    g = _g(5)
    z = torch.randn(2, 4, 8, generator=g, requires_grad=True)
    v = torch.randn(2, 4, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 8, (2, 4), generator=g)
    y[0, 0] = -100
    loss = distillation_loss(z, v, y, 2.0, 0.5)
    assert not loss.grad_fn is None
    loss.backward()
    assert v.grad is None  # the teacher is detached
    assert z.grad[0, 0].abs().max() == 0  # ignored position gets nothing
    assert z.grad[0, 1:].abs().min() > 0 and z.grad[1].abs().min() > 0


def test_distillation_bad_inputs_raise_clear_errors():
    z, v = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    y = torch.randint(0, 5, (2, 3))
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(z, torch.randn(2, 3, 6), y, 2.0, 0.5)
    with pytest.raises(ValueError, match="shift"):
        distillation_loss(z, v, y[:, :2], 2.0, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(z, v, y, 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(z, v, y, 2.0, 1.5)
    with pytest.raises(ValueError, match="every label is -100"):
        distillation_loss(z, v, torch.full((2, 3), -100), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 5\)"):
        distillation_loss(z, v, torch.full((2, 3), 5), 2.0, 0.5)
    with pytest.raises(ValueError, match="integer"):
        distillation_loss(z, v, y.float(), 2.0, 0.5)


def test_sequence_logprobs_sum_completion_tokens_only():
    g = _g(6)
    logits = torch.randn(3, 6, 10, generator=g)
    labels = torch.randint(0, 10, (3, 6), generator=g)
    labels[:, :2] = IGNORE_INDEX  # the prompt
    labels[1, 4:] = IGNORE_INDEX  # padding
    got = sequence_logprobs(logits, labels)
    want = torch.zeros(3)
    for b in range(3):
        for t in range(6):
            if labels[b, t] != -100:
                want[b] += math.log(logits[b, t].double().softmax(-1)[labels[b, t]].item())
    torch.testing.assert_close(got, want)
    # per token: -CE with ignore_index, 0 on ignored positions
    tl = token_logprobs(logits, labels)
    torch.testing.assert_close(tl[labels != -100],
                               -F.cross_entropy(logits[labels != -100], labels[labels != -100], reduction="none"))
    assert (tl[labels == -100] == 0).all()
    # all-ignored sequence has log-prob 0 (empty completion), not nan
    labels[2] = IGNORE_INDEX
    assert sequence_logprobs(logits, labels)[2].item() == 0.0
    with pytest.raises(ValueError, match="shift"):
        sequence_logprobs(logits[:, :-1], labels)


def test_sequence_logprobs_with_a_causal_model_shift():
    """logits = model(ids)[:, :-1] score labels = ids[:, 1:]: the doc's convention, on a bigram 'model'."""
    g = _g(7)
    table = torch.randn(10, 10, generator=g)  # logits for the next token given the current one
    ids = torch.randint(0, 10, (2, 5), generator=g)
    logits = table[ids]  # [B, T, V], position t predicts ids[t + 1]
    labels = ids[:, 1:].clone()
    labels[:, 0] = IGNORE_INDEX  # first completion token is at position 2 of ids
    got = sequence_logprobs(logits[:, :-1], labels)
    want = [sum(table[ids[b, t]].log_softmax(-1)[ids[b, t + 1]] for t in range(1, 4)) for b in range(2)]
    torch.testing.assert_close(got, torch.stack(want))


def test_dpo_loss_matches_formula_and_is_ln2_at_init():
    g = _g(8)
    pc, pr, rc, rr = (torch.randn(16, generator=g) * 5 for _ in range(4))
    for beta in (0.01, 0.1, 0.5):
        loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta)
        want = torch.stack([-torch.log(torch.sigmoid(beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])))) for i in range(16)])
        torch.testing.assert_close(loss, want.mean())
        torch.testing.assert_close(cr, beta * (pc - rc))
        torch.testing.assert_close(rj, beta * (pr - rr))
        assert not cr.requires_grad and not rj.requires_grad
    # policy = reference: loss ln 2, rewards 0
    loss, cr, rj = dpo_loss(pc, pr, pc.clone(), pr.clone(), 0.1)
    assert loss.item() == pytest.approx(math.log(2)) and (cr == 0).all() and (rj == 0).all()


def test_dpo_gradient_reaches_policy_only_and_pushes_chosen_up():
    g = _g(9)
    pc, pr = torch.randn(5, generator=g, requires_grad=True), torch.randn(5, generator=g, requires_grad=True)
    rc, rr = torch.randn(5, generator=g, requires_grad=True), torch.randn(5, generator=g, requires_grad=True)
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, 0.1)
    loss.backward()
    assert rc.grad is None and rr.grad is None
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises chosen, lowers rejected
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pc, pr[:3], rc, rr, 0.1)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, 0.0)


def test_grpo_advantages_unbiased_std_and_zero_advantage_groups():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0],
                            [1.0, 1.0, 1.0, 1.0],   # all correct: no signal
                            [0.0, 0.0, 0.0, 0.0],   # all wrong: no signal
                            [0.2, 0.5, 0.9, 0.4]])
    adv, keep = grpo_advantages(rewards)
    assert keep.tolist() == [True, False, False, True]
    assert (adv[1] == 0).all() and (adv[2] == 0).all()
    for i in (0, 3):
        r = rewards[i].double()
        std = math.sqrt(((r - r.mean()) ** 2).sum().item() / (len(r) - 1))  # unbiased
        torch.testing.assert_close(adv[i], ((r - r.mean()) / (std + 1e-4)).float())
    # random groups: zero mean per group, sample std ≈ 1
    r = torch.rand(20, 8, generator=_g(10))
    adv, keep = grpo_advantages(r)
    assert keep.all()
    torch.testing.assert_close(adv.mean(-1), torch.zeros(20), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.std(-1), torch.ones(20), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"\[prompts, group\]"):
        grpo_advantages(torch.rand(8))
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(torch.rand(4, 1))


def test_clipped_policy_loss_matches_direct_ppo_and_clips():
    g = _g(11)
    B, T = 4, 6
    logp_old = -torch.rand(B, T, generator=g) * 3
    logp_new = (logp_old + 0.5 * torch.randn(B, T, generator=g)).requires_grad_(True)
    adv = torch.randn(B, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.3
    loss = clipped_policy_loss(logp_new, logp_old, adv, mask, clip_eps=0.2)
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                rho = math.exp(logp_new[b, t].item() - logp_old[b, t].item())
                a = adv[b].item()
                total += -min(rho * a, min(max(rho, 0.8), 1.2) * a)
                n += 1
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    loss.backward()
    g_new = logp_new.grad
    assert (g_new[~mask] == 0).all()
    # clipped tokens (ratio outside the band in the direction the advantage pushes) get no gradient
    rho = (logp_new - logp_old).exp().detach()
    a = adv[:, None].expand(B, T)
    clipped = mask & (((a > 0) & (rho > 1.2)) | ((a < 0) & (rho < 0.8)))
    assert clipped.any() and (g_new[clipped] == 0).all()
    active = mask & ~clipped
    torch.testing.assert_close(g_new[active], (-a * rho)[active] / mask.sum())


def test_clipped_policy_loss_on_policy_is_reinforce_and_zero_advantage_gives_no_gradient():
    g = _g(12)
    logp = (-torch.rand(3, 5, generator=g)).requires_grad_(True)
    adv = torch.tensor([1.0, -2.0, 0.0])
    mask = torch.ones(3, 5, dtype=torch.bool)
    loss = clipped_policy_loss(logp, logp.detach(), adv, mask)
    assert loss.item() == pytest.approx(-adv.mean().item())  # ρ = 1
    loss.backward()
    torch.testing.assert_close(logp.grad, (-adv[:, None] / 15).expand(3, 5))  # −a ∇log π / tokens
    assert (logp.grad[2] == 0).all()  # a zero-advantage completion contributes nothing
    with pytest.raises(ValueError, match="one value per completion"):
        clipped_policy_loss(logp, logp.detach(), adv[:2], mask)
    with pytest.raises(ValueError, match="selects no position"):
        clipped_policy_loss(logp, logp.detach(), adv, torch.zeros(3, 5, dtype=torch.bool))


def test_kl_to_reference_k3_is_nonnegative_unbiased_and_reference_gets_no_gradient():
    g = _g(13)
    # exact per-token identity
    p = torch.randn(50, generator=g)
    r = torch.randn(50, generator=g)
    torch.testing.assert_close(kl_to_reference(p, r), torch.exp(r - p) - (r - p) - 1)
    assert (kl_to_reference(p, r) >= 0).all() and (kl_to_reference(p, p) == 0).all()
    # unbiased: sampling tokens from π_θ, the mean of k3 ≈ the exact KL(π_θ ‖ π_ref)
    pi = torch.randn(6, generator=g).softmax(-1)
    ref = torch.randn(6, generator=g).softmax(-1)
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    est = kl_to_reference(pi.log()[tokens], ref.log()[tokens]).mean()
    exact = (pi * (pi.log() - ref.log())).sum()
    assert est.item() == pytest.approx(exact.item(), rel=0.03)
    lp = torch.randn(4, generator=g, requires_grad=True)
    rp = torch.randn(4, generator=g, requires_grad=True)
    kl_to_reference(lp, rp).sum().backward()
    assert rp.grad is None and lp.grad.abs().min() > 0


def test_masked_mean():
    x = torch.arange(6.0).reshape(2, 3)
    m = torch.tensor([[True, False, True], [False, False, True]])
    assert masked_mean(x, m).item() == pytest.approx((0 + 2 + 5) / 3)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_load_balancing_uniform_routing_is_one_at_any_top_k(k):
    E = 8
    # uniform probabilities and every expert chosen equally often (ties broken round-robin by a tiny offset)
    logits = torch.zeros(E * 3, E)
    for t in range(E * 3):
        for j in range(k):
            logits[t, (t + j) % E] += 1e-6 * (k - j)
    assert load_balancing_loss(logits, k).item() == pytest.approx(1.0, abs=1e-5)
    # against the formula on random logits
    z = torch.randn(40, E, generator=_g(14))
    idx = z.topk(k, -1).indices
    f = torch.bincount(idx.flatten(), minlength=E).float() / (40 * k)
    assert load_balancing_loss(z, k).item() == pytest.approx(E * (f * z.softmax(-1).mean(0)).sum().item(), rel=1e-6)
