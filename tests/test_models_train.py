import pytest
import torch
from torch import nn

from companion import data, models, train


@pytest.mark.parametrize("cls,params", [(models.LeNet300100, 266_610),
                                        (models.LeNet5, 431_080),
                                        (models.SmallCNN, 421_834)])
def test_parameter_counts_match_docstrings(cls, params):
    model = cls()
    assert models.count_trainable(model) == params
    assert f"{params:,}" in (models.__doc__ or "")
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_mlp_accepts_flat_input():
    assert models.LeNet300100()(torch.zeros(2, 784)).shape == (2, 10)


@pytest.mark.parametrize("kwargs", [{"c1": 0}, {"hidden": -1}, {"num_classes": 1}])
def test_models_reject_bad_widths(kwargs):
    with pytest.raises(ValueError):
        models.SmallCNN(**kwargs)


def test_set_seed_reproducible():
    train.set_seed(1)
    a = torch.randn(3)
    train.set_seed(1)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError):
        train.set_seed(-1)


def test_fit_learns_and_reports(tiny_data):
    train.set_seed(0)
    loaders = data.make_loaders(tiny_data, batch_size=32)
    model = models.LeNet300100()
    before = train.evaluate(model, loaders.test)
    hist = train.fit(model, loaders.train, epochs=3, val_loader=loaders.val, progress=False,
                     device="cpu")
    assert hist.steps == 3 * len(loaders.train)
    assert len(hist.train_loss) == 3 and len(hist.val_acc) == 3
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.final_val_acc > max(before, 0.5)
    assert hist.best_val_acc >= hist.final_val_acc
    assert "optimizer steps" in str(hist)


def test_fit_calls_after_step(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=64)
    seen = []
    train.fit(models.LeNet300100(), loaders.train, after_step=seen.append, progress=False,
              device="cpu")
    assert seen == list(range(1, len(loaders.train) + 1))


def test_fit_stops_on_nan_loss(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=64)

    def nan_loss(logits, y):
        return (logits * float("nan")).sum()
    with pytest.raises(ValueError, match="loss became"):
        train.fit(models.LeNet300100(), loaders.train, loss_fn=nan_loss, progress=False,
                  device="cpu")


@pytest.mark.parametrize("kwargs,err", [({"epochs": 0}, ValueError), ({"lr": -1.0}, ValueError),
                                        ({"lr": float("nan")}, ValueError)])
def test_fit_rejects_bad_arguments(tiny_data, kwargs, err):
    loaders = data.make_loaders(tiny_data, batch_size=64)
    with pytest.raises(err):
        train.fit(models.LeNet300100(), loaders.train, progress=False, **kwargs)


def test_fit_rejects_non_module(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=64)
    with pytest.raises(TypeError, match="model"):
        train.fit(lambda x: x, loaders.train)


def test_evaluate_restores_training_mode(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=64)
    model = models.SmallCNN().train()
    acc = train.evaluate(model, loaders.test)
    assert 0.0 <= acc <= 1.0 and model.training


def test_default_device():
    assert train.default_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError):
        train.default_device("tpu")


def test_clone_is_independent():
    m = nn.Linear(2, 2)
    c = train.clone(m)
    with torch.no_grad():
        c.weight.zero_()
    assert m.weight.abs().sum() > 0
