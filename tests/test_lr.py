import math

import pytest
import torch
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
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr.lr_range_test(model, _toy_loader(), min_lr=1e-5, max_lr=10.0, steps=80,
                           device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not mutated
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
    row = res.row()
    assert row["steps"] == res.steps and "±" in row["final acc"]
    with pytest.raises(ValueError, match="seeds"):
        lr.seed_sweep("x", models.LeNet300100, loaders.train, loaders.val, seeds=(0,))
