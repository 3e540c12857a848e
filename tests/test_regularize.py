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
    gap = regularize.generalization_gap(model, loaders.train, loaders.val)
    assert -1 <= gap <= 1
