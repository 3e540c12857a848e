import math

import pytest
import torch
from state_check import assert_unchanged
from torch import nn

from companion import data, lr, models


def _toy_loader(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, generator=g)


def _toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))


def test_range_test_sweeps_exponentially_and_suggests_a_sane_lr():
    model = _toy_model()
    with assert_unchanged(model):
        res = lr.lr_range_test(model, _toy_loader(), min_lr=1e-5, max_lr=10.0, steps=80,
                               device="cpu")
    assert res.lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(res.lrs, res.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)  # geometric
    assert res.stop_reason in ("completed", "diverged")
    assert 1e-4 < res.suggested_lr < 1.0
    assert res.suggested_lr == pytest.approx(res.min_loss_lr / 10)
    assert res.steps <= 80


def test_range_test_cycles_a_short_loader():
    res = lr.lr_range_test(_toy_model(), _toy_loader(n=64), min_lr=1e-4, max_lr=1e-2,
                           steps=20, device="cpu")
    assert res.steps == 20 and res.stop_reason == "completed"


def test_range_test_stops_cleanly_on_non_finite_loss():
    def loss_fn(logits, y):
        loss = nn.functional.cross_entropy(logits, y)
        return loss if loss.item() < 0.6 else loss * math.inf

    res = lr.lr_range_test(_toy_model(), _toy_loader(), min_lr=1e-3, max_lr=1.0, steps=50,
                           loss_fn=loss_fn, device="cpu")
    assert res.stop_reason == "non-finite loss"
    assert res.steps < 50
    assert all(math.isfinite(v) for v in res.losses)


def test_range_test_bad_input():
    with pytest.raises(ValueError, match="min_lr"):
        lr.lr_range_test(_toy_model(), _toy_loader(), min_lr=1.0, max_lr=1.0)
    with pytest.raises(ValueError, match="min_lr"):
        lr.lr_range_test(_toy_model(), _toy_loader(), min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        lr.lr_range_test(_toy_model(), _toy_loader(), steps=2)
    with pytest.raises(TypeError, match="model"):
        lr.lr_range_test("not a model", _toy_loader())


@pytest.mark.parametrize("kind", ["constant", "step", "cosine", "onecycle"])
def test_schedules(kind):
    p = [nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=0.1)
    sched = lr.make_schedule(opt, kind, total_steps=100, warmup_steps=0 if kind == "onecycle"
                             else 10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.1, rel=1e-6)
    if kind != "onecycle":
        assert lrs[0] == pytest.approx(0.001)  # warm-up starts at 1%
        assert lrs[10] == pytest.approx(0.1)
    if kind in ("cosine", "onecycle"):
        assert lrs[-1] < 0.01
    if kind == "step":
        assert lrs[40] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)


def test_schedule_bad_kind():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="kind"):
        lr.make_schedule(opt, "linear-ish", total_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        lr.make_schedule(opt, "cosine", total_steps=10, warmup_steps=10)
    with pytest.raises(TypeError, match="optimizer"):
        lr.make_schedule("sgd", "cosine", total_steps=10)


def test_seed_sweep_reports_mean_std_and_compute(tiny_data):
    loaders = data.make_loaders(tiny_data, 64, flatten=True)
    res = lr.seed_sweep("adam", lambda: models.LeNet300100(32, 16), loaders.train, loaders.val,
                        seeds=(0, 1), epochs=2, lr=3e-3, device="cpu",
                        schedule=lambda o, n: lr.make_schedule(o, "cosine", total_steps=n))
    assert len(res.histories) == 2
    assert res.steps == 2 * len(loaders.train)
    mean, std = res.final_acc
    assert 0 <= mean <= 1 and std >= 0
    assert res.best_acc[0] >= mean
    row = res.as_row()
    assert row["steps"] == res.steps and "±" in row["final acc"]
    with pytest.raises(ValueError, match="seeds"):
        lr.seed_sweep("x", models.LeNet300100, loaders.train, loaders.val, seeds=(0,))


def test_training_curve_records_steps_examples_and_accuracy(tiny_data):
    loaders = data.make_loaders(tiny_data, 50, flatten=True)  # 256 images: 5 batches of 50 + 6
    model = models.LeNet300100(32, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    curve = lr.training_curve_(model, loaders.train, loaders.val, optimizer=opt, epochs=2,
                              eval_every=4, device="cpu", label="sgd")
    assert curve.label == "sgd"
    assert curve.steps == [0, 4, 8, 12]                 # 12 steps in all: the last is a multiple
    assert curve.examples[0] == 0 and curve.examples[-1] == 2 * 256
    assert curve.examples[1] == 200                     # 4 full batches of 50
    assert curve.seconds[0] == 0.0 and curve.seconds == sorted(curve.seconds)
    assert len(curve.val_acc) == 4 and all(0 <= a <= 1 for a in curve.val_acc)
    assert curve.final_acc == curve.val_acc[-1] and curve.best_acc == max(curve.val_acc)
    assert curve.final_acc > curve.val_acc[0] + 0.15     # it really trained (10 classes)
    assert model.training                               # left in train mode


def test_training_curve_last_evaluation_and_time_to_target(tiny_data):
    loaders = data.make_loaders(tiny_data, 64, flatten=True)  # 4 steps per epoch
    model = models.LeNet300100(32, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    curve = lr.training_curve_(model, loaders.train, loaders.val, optimizer=opt, epochs=1,
                              eval_every=3, device="cpu")
    assert curve.steps == [0, 3, 4]                     # the end is always scored
    reached = curve.val_acc[-1]
    i = next(k for k, a in enumerate(curve.val_acc) if a >= reached)
    assert curve.steps_to(reached) == curve.steps[i]
    assert curve.examples_to(reached) == curve.examples[i]
    assert curve.seconds_to(reached) == curve.seconds[i]
    assert curve.steps_to(0.0) == 0
    if curve.best_acc < 1.0:
        assert curve.steps_to(1.0) is None and curve.seconds_to(1.0) is None
    with pytest.raises(ValueError, match="target"):
        curve.steps_to(1.5)


def test_training_curve_bad_input(tiny_data):
    loaders = data.make_loaders(tiny_data, 64, flatten=True)
    model = models.LeNet300100(32, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="optimizer"):
        lr.training_curve_(model, loaders.train, loaders.val, optimizer="sgd")
    with pytest.raises(TypeError, match="model"):
        lr.training_curve_("net", loaders.train, loaders.val, optimizer=opt)
    with pytest.raises(ValueError, match="eval_every"):
        lr.training_curve_(model, loaders.train, loaders.val, optimizer=opt, eval_every=0)
    with pytest.raises(ValueError, match="epochs"):
        lr.training_curve_(model, loaders.train, loaders.val, optimizer=opt, epochs=0)
    big = torch.optim.SGD(model.parameters(), lr=1e30)
    with pytest.raises(ValueError, match="lower the learning rate"):
        lr.training_curve_(model, loaders.train, loaders.val, optimizer=big, epochs=3,
                          device="cpu")


def test_scaled_lr():
    assert lr.scaled_lr(0.01, 32, 128) == pytest.approx(0.04)
    assert lr.scaled_lr(0.01, 32, 8) == pytest.approx(0.0025)
    assert lr.scaled_lr(0.01, 32, 128, rule="sqrt") == pytest.approx(0.02)
    assert lr.scaled_lr(0.5, 64, 64) == 0.5
    with pytest.raises(ValueError, match="rule"):
        lr.scaled_lr(0.01, 32, 64, rule="cubic")
    with pytest.raises(ValueError, match="base_lr"):
        lr.scaled_lr(0.0, 32, 64)
    with pytest.raises(ValueError, match="batch"):
        lr.scaled_lr(0.1, 32, 0)
    with pytest.raises(TypeError, match="base_batch"):
        lr.scaled_lr(0.1, 32.0, 64)


def test_empty_loader_is_refused_not_looped_on(empty_loader):
    with pytest.raises(ValueError, match="train_loader"):
        lr.lr_range_test(_toy_model(), empty_loader, steps=5, device="cpu")
    opt = torch.optim.SGD(_toy_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="train_loader"):
        lr.training_curve_(_toy_model(), empty_loader, _toy_loader(n=32), optimizer=opt,
                          device="cpu")


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(kind="step", gamma=-1.0), ValueError, "gamma"),
    (dict(kind="step", gamma=0.0), ValueError, "gamma"),
    (dict(kind="step", gamma=float("nan")), ValueError, "gamma"),
    (dict(kind="step", gamma=float("inf")), ValueError, "gamma"),
    (dict(kind="step", gamma="0.1"), TypeError, "gamma"),
    (dict(kind="step", step_size=0), ValueError, "step_size"),
    (dict(kind="step", step_size=-3), ValueError, "step_size"),
    (dict(kind="step", step_size=2.5), TypeError, "step_size"),
    (dict(kind="onecycle", max_lr=-1.0), ValueError, "max_lr"),
    (dict(kind="onecycle", max_lr=0.0), ValueError, "max_lr"),
    (dict(kind="onecycle", max_lr=float("nan")), ValueError, "max_lr"),
])
def test_schedule_rejects_bad_numbers(kwargs, exc, name):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(exc, match=name):
        lr.make_schedule(opt, total_steps=30, **kwargs)


def test_schedule_step_size_is_used_as_given():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = lr.make_schedule(opt, "step", total_steps=30, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_seed_sweep_checks_its_arguments():
    with pytest.raises(TypeError, match="seeds"):
        lr.seed_sweep("x", _toy_model, _toy_loader(), _toy_loader(), seeds=3)
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        lr.seed_sweep("x", _toy_model, _toy_loader(), _toy_loader(), seeds=(0, -1))
    with pytest.raises(TypeError, match="make_model"):
        lr.seed_sweep("x", "model", _toy_loader(), _toy_loader())
