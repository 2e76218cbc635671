"""Distillation: the soft/hard schedule, the training loop (baseline = pretraining, codistillation), and the claim that
a distilled student beats the same student trained on hard labels alone at equal steps and data (ci profile)."""

import copy

import pytest
import torch

import minillama4
from minillama4.course import zoo
from minillama4.course.data import course_tokens
from minillama4.losses import distillation_loss
from minillama4.train import TrainConfig, seed_everything, train
from minillama4.train.distill import SCHEDULES, DistillConfig, alpha_at, distill, student_train_config


def _tiny(seed=0, **over):
    cfg = minillama4.Llama4Config.preset("toy").replace(**{
        "vocab_size": 64, "hidden_size": 32, "head_dim": 8, "intermediate_size": 32, "intermediate_size_mlp": 64,
        "attention_chunk_size": 8, **over})
    seed_everything(seed)
    return minillama4.Llama4(cfg)


def _stream(n=3000, vocab=64):
    g = torch.Generator().manual_seed(0)
    motifs = torch.randint(3, vocab, (6, 10), generator=g)
    return motifs[torch.randint(0, 6, (n // 10,), generator=g)].flatten()


TC = TrainConfig(steps=8, batch_size=4, seq_len=16, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=4,
                 eval_batches=2)


def test_schedules_endpoints_and_phases():
    steps = 101
    wsd = DistillConfig(schedule="wsd", alpha_min=0.1, alpha_max=0.9, warmup_frac=0.1, decay_frac=0.3)
    a = [alpha_at(s, steps, wsd) for s in range(steps)]
    assert a[0] == pytest.approx(0.1) and a[-1] == pytest.approx(0.1)
    assert all(x == pytest.approx(0.9) for x in a[10:71])  # stable phase: s in [0.1, 0.7]
    assert all(a[i] < a[i + 1] for i in range(0, 9)) and all(a[i] > a[i + 1] for i in range(71, 100))
    lin = DistillConfig(schedule="linear", alpha_min=0.0, alpha_max=1.0)
    up = DistillConfig(schedule="ramp_up", alpha_min=0.0, alpha_max=1.0)
    assert alpha_at(0, 11, lin) == 1.0 and alpha_at(10, 11, lin) == 0.0 and alpha_at(5, 11, lin) == pytest.approx(0.5)
    assert alpha_at(0, 11, up) == 0.0 and alpha_at(10, 11, up) == 1.0
    assert {alpha_at(s, 11, DistillConfig(schedule="constant", alpha_max=0.7)) for s in range(11)} == {0.7}
    for name in SCHEDULES:  # every schedule stays within [alpha_min, alpha_max] and works for a 1-step run
        kd = DistillConfig(schedule=name, alpha_min=0.2, alpha_max=0.6)
        assert all(0.2 - 1e-9 <= alpha_at(s, 37, kd) <= 0.6 + 1e-9 for s in range(37))
        assert 0.2 <= alpha_at(0, 1, kd) <= 0.6


def test_bad_schedule_inputs_raise():
    with pytest.raises(ValueError, match="unknown schedule"):
        DistillConfig(schedule="cosine")
    with pytest.raises(ValueError, match="alpha_min"):
        DistillConfig(alpha_max=1.5)
    with pytest.raises(ValueError, match="sum"):
        DistillConfig(warmup_frac=0.6, decay_frac=0.6)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="outside"):
        alpha_at(10, 10, DistillConfig())


def test_hard_label_baseline_is_exactly_pretraining():
    data = _stream()
    a, b = _tiny(), _tiny()
    h_train = train(a, data, data, TC, progress=False)
    h_dist = distill(b, None, data, data, TC, progress=False)
    assert h_dist.train_loss == h_train.train_loss and h_dist.val_loss == h_train.val_loss
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert h_dist.alpha == [0.0] * TC.steps


def test_distillation_step_uses_the_package_loss_and_leaves_the_teacher_alone():
    data = _stream()
    teacher = _tiny(1, num_local_experts=6)
    before = copy.deepcopy(teacher.state_dict())
    kd = DistillConfig(schedule="constant", alpha_max=0.7, temperature=2.0)
    # one step by hand: loss = distillation_loss(α) + the balance loss, AdamW step
    student, by_hand = _tiny(2), _tiny(2)
    tc1 = TrainConfig(**{**TC.__dict__, "steps": 1, "eval_every": 1})
    h = distill(student, teacher, data, data, tc1, kd, progress=False)
    from minillama4.train import get_batch, lr_at, make_optimizer
    from minillama4.train.pretrain import router_aux_loss
    x, y = get_batch(data, tc1.batch_size, tc1.seq_len, torch.Generator().manual_seed(tc1.seed))
    opt = make_optimizer(by_hand, tc1)
    for gr in opt.param_groups:
        gr["lr"] = lr_at(0, tc1)
    logits, routing = by_hand(x, return_routing=True)
    with torch.no_grad():
        t_logits = teacher(x)
    loss = distillation_loss(logits, t_logits, y, 2.0, 0.7) + router_aux_loss(routing, tc1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(by_hand.parameters(), tc1.grad_clip)
    opt.step()
    for p, q in zip(student.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p, q)
    assert h.alpha == [0.7] and h.soft_loss[0] == pytest.approx(
        distillation_loss(_tiny(2)(x), t_logits, y, 2.0, 1.0).item(), rel=1e-5)
    for k, v in teacher.state_dict().items():  # offline distillation: the teacher is untouched, has no gradients
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in teacher.parameters())


def test_student_equal_to_teacher_has_zero_soft_loss():
    data = _stream()
    teacher = _tiny(3)
    student = copy.deepcopy(teacher)
    h = distill(student, teacher, data, data, TrainConfig(**{**TC.__dict__, "steps": 1}), progress=False)
    assert h.soft_loss[0] == pytest.approx(0.0, abs=1e-6)


def test_codistillation_trains_the_teacher_and_uses_its_current_predictions():
    data = _stream()
    teacher = _tiny(4, num_local_experts=6)
    kd = DistillConfig(schedule="constant", alpha_max=0.8, temperature=1.0)
    # a frozen teacher (learning rate 0) under codistill gives exactly offline distillation
    frozen = TrainConfig(**{**TC.__dict__, "lr": 0.0, "min_lr": 0.0})
    s1, s2, t2 = _tiny(5), _tiny(5), copy.deepcopy(teacher)
    h1 = distill(s1, teacher, data, data, TC, kd, progress=False)
    h2 = distill(s2, t2, data, data, TC, kd, codistill=True, teacher_cfg=frozen, progress=False)
    assert h1.val_loss == h2.val_loss and h1.soft_loss == h2.soft_loss
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, t2.state_dict()[k])
    # with a learning rate the teacher trains (its validation loss is tracked) and the student's targets move with it
    s3, t3 = _tiny(5), copy.deepcopy(teacher)
    h3 = distill(s3, t3, data, data, TC, kd, codistill=True, progress=False)
    assert len(h3.teacher_val_loss) == len(h3.eval_steps) == 2
    assert any(not torch.equal(v, t3.state_dict()[k]) for k, v in teacher.state_dict().items())
    assert h3.soft_loss[0] == h1.soft_loss[0] and h3.soft_loss[1:] != h1.soft_loss[1:]  # same first targets only
    teacher_hist = train(copy.deepcopy(teacher), data, data, TC, progress=False)
    assert h3.teacher_val_loss == pytest.approx(teacher_hist.val_loss)  # the teacher's own training is unchanged


def test_bad_distill_inputs_raise():
    data = _stream()
    with pytest.raises(ValueError, match="codistill=True needs a teacher"):
        distill(_tiny(), None, data, data, TC, codistill=True, progress=False)
    with pytest.raises(ValueError, match="vocabulary"):
        distill(_tiny(), _tiny(vocab_size=80), data, data, TC, progress=False)


def test_mini_behemoth_is_bigger_than_mini_scout():
    for profile in ("ci", "laptop"):
        r = zoo.recipes(profile)
        t, s = r["mini-behemoth"].config, r["mini-scout"].config
        assert t.num_local_experts > s.num_local_experts
        assert t.num_parameters(active=True) > s.num_parameters(active=True)
        assert t.num_parameters() > s.num_parameters() and t.vocab_size == s.vocab_size


@pytest.mark.timeout(900)
def test_distilled_student_beats_hard_labels_at_equal_steps_and_data(monkeypatch):
    """The chapter's claim under the ci profile: same init, same batches, same steps; only the targets differ."""
    monkeypatch.setenv("MINILLAMA4_PROFILE", "ci")
    teacher, _ = zoo.pretrained("mini-behemoth", verbose=False)
    cfg = zoo.recipes()["mini-scout"].config
    tc = student_train_config()
    train_ids, val_ids = course_tokens("train").ids, course_tokens("val").ids
    seed_everything(1)
    baseline = minillama4.Llama4(cfg)
    student = copy.deepcopy(baseline)
    h_hard = distill(baseline, None, train_ids, val_ids, tc, progress=False)
    h_kd = distill(student, teacher, train_ids, val_ids, tc, DistillConfig(), progress=False)
    assert h_kd.eval_steps == h_hard.eval_steps
    assert h_kd.val_loss[-1] < h_hard.val_loss[-1] - 0.05, (h_kd.val_loss, h_hard.val_loss)
