import pytest
import torch

from companion import optim

CASES = [
    (optim.GD, torch.optim.SGD, {"lr": 0.1}),
    (optim.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (optim.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
]


def _train(cls, kwargs, steps=100, dtype=torch.float64):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8, dtype=dtype), torch.randint(0, 3, (64,))
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model.to(dtype)
    opt = cls(model.parameters(), **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("ours,theirs,kwargs", CASES)
def test_matches_torch_optim_after_100_steps(ours, theirs, kwargs):
    a, b = _train(ours, kwargs), _train(theirs, kwargs)
    assert (a - b).abs().max().item() <= 1e-6


@pytest.mark.parametrize("ours,theirs,kwargs", CASES)
def test_float32_agrees_up_to_rounding_order(ours, theirs, kwargs):
    # same formulas, float32 operations in another order: rounding differences only
    a, b = _train(ours, kwargs, dtype=torch.float32), _train(theirs, kwargs, dtype=torch.float32)
    assert (a - b).abs().max().item() <= 1e-5


def test_adamw_differs_from_adam_with_l2():
    a = _train(optim.Adam, {"lr": 0.01, "weight_decay": 0.1})
    b = _train(optim.AdamW, {"lr": 0.01, "weight_decay": 0.1})
    assert (a - b).abs().max().item() > 1e-3


def test_trajectory_descends_a_bowl():
    path = optim.trajectory(lambda p: (p ** 2).sum(), (1.0, -2.0),
                            lambda ps: optim.GD(ps, lr=0.1), steps=50)
    assert path.shape == (51, 2)
    assert abs(path[-1]).max() < 1e-3


def test_bad_arguments():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        optim.GD(p, lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        optim.Momentum(p, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="start"):
        optim.trajectory(lambda q: q.sum(), (1.0, 2.0, 3.0), lambda ps: optim.GD(ps, lr=0.1))


@pytest.mark.parametrize("nesterov", ["yes", 1, None, "False"])
def test_nesterov_must_be_a_bool(nesterov):
    with pytest.raises(TypeError, match="nesterov"):
        optim.Momentum([torch.zeros(2, requires_grad=True)], lr=0.1, nesterov=nesterov)


def test_betas_must_be_a_pair():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9,))
    with pytest.raises(TypeError, match="betas"):
        optim.AdamW(p, betas=0.9)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam(p, lr=float("nan"))
