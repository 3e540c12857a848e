import numpy as np
import pytest
import torch
from torch import nn

from companion import data, models, regularize, train


def test_l1_l2_values():
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, -0.5]]))
        m.bias.fill_(7.0)
    assert regularize.l1_penalty(m).item() == pytest.approx(4.0)
    assert regularize.l2_penalty(m).item() == pytest.approx(0.5 * 5.5)
    assert regularize.l1_penalty(m, weights_only=False).item() == pytest.approx(18.0)


def test_penalized_loss_adds_terms():
    m = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    base = nn.functional.cross_entropy(m(x), y)
    loss = regularize.penalized_loss(m, l1=0.1, l2=0.2)(m(x), y)
    want = base + 0.1 * regularize.l1_penalty(m) + 0.2 * regularize.l2_penalty(m)
    assert torch.allclose(loss, want)
    with pytest.raises(ValueError, match="l1"):
        regularize.penalized_loss(m, l1=-1.0)


def test_l2_with_sgd_equals_weight_decay():
    def run(wd, l2):
        torch.manual_seed(0)
        m = nn.Linear(4, 3, bias=False)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=wd)
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        for _ in range(20):
            opt.zero_grad()
            regularize.penalized_loss(m, l2=l2)(m(x), y).backward()
            opt.step()
        return m.weight.detach()
    assert torch.allclose(run(0.01, 0.0), run(0.0, 0.01), atol=1e-6)


def test_near_zero_fraction_and_gap(tiny_data):
    m = nn.Linear(4, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.0, 1e-4, 0.5, 1.0], [0.0, 0.0, 2.0, -1e-5]]))
    assert regularize.near_zero_fraction(m, 0) == pytest.approx(3 / 8)
    assert regularize.near_zero_fraction(m, 1e-3) == pytest.approx(5 / 8)
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    model = models.LeNet300100(16, 8)
    train.fit(model, loaders.train, epochs=1, progress=False, device="cpu")
    gap = regularize.measure_gap(model, loaders.train, loaders.val).gap
    assert -1 <= gap <= 1


def test_decay_param_groups_adamw_decays_weights_only():
    m = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    groups = regularize.decay_param_groups(m, 0.5)
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    # with no task gradient AdamW multiplies the decayed weights by (1 - lr * wd) per step
    w0, b0 = m[0].weight.detach().clone(), m[0].bias.detach().clone()
    opt = torch.optim.AdamW(groups, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (0.0 * m(torch.randn(2, 4)).sum()).backward()
        opt.step()
    assert torch.allclose(m[0].weight, w0 * 0.95 ** 3)
    assert torch.equal(m[0].bias, b0)
    assert len(regularize.decay_param_groups(nn.Linear(2, 2, bias=False), 0.1)) == 1
    with pytest.raises(ValueError, match="weight_decay"):
        regularize.decay_param_groups(m, -1.0)
    with pytest.raises(TypeError, match="model"):
        regularize.decay_param_groups("not a model", 0.1)


def test_measure_gap_uses_eval_mode(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    model = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 10))
    model.train()
    a = regularize.measure_gap(model, loaders.train, loaders.val)
    b = regularize.measure_gap(model, loaders.train, loaders.val)
    assert a == b                                   # dropout off: deterministic
    assert model.training                           # mode restored
    assert a.gap == pytest.approx(a.train_acc - a.test_acc)
    assert "gap" in str(a)


def test_corrupt_labels():
    y = np.arange(1000) % 10
    new, wrong = regularize.corrupt_labels(y, 0.3, seed=1)
    assert new.dtype == np.int64 and new.shape == y.shape
    assert np.array_equal(wrong, new != y)
    assert np.array_equal(y, np.arange(1000) % 10)  # input untouched
    assert 0.2 < wrong.mean() < 0.34                # about 0.3 * 0.9 of them
    again, _ = regularize.corrupt_labels(torch.from_numpy(y), 0.3, seed=1)
    assert np.array_equal(new, again)
    assert not regularize.corrupt_labels(y, 0.0)[1].any()
    with pytest.raises(ValueError, match="fraction"):
        regularize.corrupt_labels(y, 1.5)
    with pytest.raises(TypeError, match="labels"):
        regularize.corrupt_labels(y.astype(np.float32), 0.1)
    with pytest.raises(ValueError, match="labels must lie"):
        regularize.corrupt_labels(y, 0.1, num_classes=5)
    with pytest.raises(ValueError, match="1-D"):
        regularize.corrupt_labels(y.reshape(10, 100), 0.1)


def test_soft_threshold_is_the_l1_proximal_operator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    before = [p.detach().clone() for p in model.parameters()]
    out = regularize.soft_threshold_(model, 0.1)
    assert out is model
    for old, new in zip(before, model.parameters(), strict=True):
        if old.dim() < 2:
            assert torch.equal(old, new)                       # biases untouched by default
            continue
        assert torch.equal(new == 0, old.abs() <= 0.1)          # exact zeros inside the band
        keep = old.abs() > 0.1
        assert torch.allclose(new[keep].abs(), old[keep].abs() - 0.1)
        assert torch.equal(new[keep].sign(), old[keep].sign())
    # the proximal operator minimises 0.5 (w - u)^2 + t |w| coordinate-wise: check on a grid
    u, t = torch.tensor(0.37), 0.2
    grid = torch.linspace(-1, 1, 200_001)
    best = grid[(0.5 * (grid - u) ** 2 + t * grid.abs()).argmin()]
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(u)
    regularize.soft_threshold_(lin, t)
    assert abs(lin.weight.item() - best.item()) < 2e-5              # grid step 1e-5
    with pytest.raises(ValueError, match="threshold"):
        regularize.soft_threshold_(model, -1.0)
