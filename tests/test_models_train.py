from dataclasses import dataclass

import pytest
import torch
from torch import nn

from companion import data, models, train


@pytest.mark.parametrize("cls,params", [(models.LeNet300100, 266_610),
                                        (models.LeNet5, 431_080),
                                        (models.SmallCNN, 421_834)])
def test_parameter_counts_match_docstrings(cls, params):
    model = cls()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params
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


def test_fit_refuses_an_empty_loader(empty_loader):
    with pytest.raises(ValueError, match="train_loader"):
        train.fit(nn.Linear(4, 2), empty_loader, progress=False, device="cpu")


@pytest.mark.parametrize("kwargs,name", [({"progress": "no"}, "progress"),
                                         ({"progress": 0}, "progress"),
                                         ({"loss_fn": "mse"}, "loss_fn"),
                                         ({"after_step": 3}, "after_step"),
                                         ({"optimizer": "adam"}, "optimizer"),
                                         ({"output_fn": "logits"}, "output_fn")])
def test_fit_rejects_wrong_types(tiny_data, kwargs, name):
    loaders = data.make_loaders(tiny_data, batch_size=64)
    with pytest.raises(TypeError, match=name):
        train.fit(models.LeNet300100(), loaders.train, device="cpu", **kwargs)


# --------------------------------------------------------------------------- structured outputs
class _Out:  # what HuggingFace models return, minus the library: an object with .logits
    def __init__(self, logits):
        self.logits, self.hidden = logits, None


class _Wrapped(nn.Module):
    """A LeNet-300-100 whose output is wrapped in a structure."""

    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = models.LeNet300100(32, 16), wrap

    def forward(self, x):
        return self.wrap(self.net(x))


_WRAPS = {
    "dataclass": lambda z: _DataOut(logits=z, extra=z.detach()),
    "object": _Out,
    "dict": lambda z: {"loss": None, "logits": z},
    "tuple": lambda z: (z, z.detach().mean()),
    "list": lambda z: [z],
}


@dataclass
class _DataOut:
    logits: torch.Tensor
    extra: torch.Tensor


def test_logits_of():
    z = torch.randn(2, 3)
    for wrap in _WRAPS.values():
        assert train.logits_of(wrap(z)) is z
    assert train.logits_of(z) is z
    for bad in ({"scores": z}, (1, z), [], "logits", _Out("not a tensor")):
        with pytest.raises(TypeError, match="output_fn"):
            train.logits_of(bad)


@pytest.mark.parametrize("kind", list(_WRAPS))
def test_fit_and_evaluate_take_structured_outputs(tiny_data, kind):
    histories, nets = [], []
    for make in (lambda: models.LeNet300100(32, 16), lambda: _Wrapped(_WRAPS[kind])):
        train.set_seed(0)
        loaders = data.make_loaders(tiny_data, batch_size=64, flatten=True)
        nets.append(make())
        histories.append(train.fit(nets[-1], loaders.train, val_loader=loaders.val,
                                   progress=False, device="cpu"))
    (h_plain, h_wrapped), (plain, wrapped) = histories, nets
    assert h_wrapped.train_loss == h_plain.train_loss  # bit-identical to the plain model
    assert h_wrapped.val_acc == h_plain.val_acc
    assert train.evaluate(wrapped, loaders.test) == train.evaluate(plain, loaders.test)


def test_output_fn_picks_the_logits(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=64, flatten=True)
    model = _Wrapped(lambda z: {"scores": z})
    with pytest.raises(TypeError, match="output_fn"):
        train.evaluate(model, loaders.test)
    acc = train.evaluate(model, loaders.test, output_fn=lambda out: out["scores"])
    assert acc == train.evaluate(model.net, loaders.test)
    hist = train.fit(model, loaders.train, progress=False, device="cpu",
                     output_fn=lambda out: out["scores"])
    assert hist.steps == len(loaders.train)
    with pytest.raises(TypeError, match="output_fn must return"):
        train.evaluate(model, loaders.test, output_fn=lambda out: out)


def test_cached_training_trains_once_then_loads(tmp_path):
    calls = []

    def fit_fn(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(3.0)

    key = {"data": "none", "recipe": "fill with 3"}
    a = train.cached_training("toy", key, lambda: nn.Linear(2, 2), fit_fn, cache_dir=tmp_path)
    b = train.cached_training("toy", key, lambda: nn.Linear(2, 2), fit_fn, cache_dir=tmp_path)
    assert calls == [1] and torch.equal(a.weight, b.weight) and not b.training
    train.cached_training("toy", {**key, "seed": 1}, lambda: nn.Linear(2, 2), fit_fn,
                          cache_dir=tmp_path)
    assert calls == [1, 1] and len(list(tmp_path.glob("toy-*.pt"))) == 2
    with pytest.raises(ValueError, match="name"):
        train.cached_training("a/b", key, lambda: nn.Linear(2, 2), fit_fn, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="key"):
        train.cached_training("toy", ["x"], lambda: nn.Linear(2, 2), fit_fn, cache_dir=tmp_path)


def test_fit_hooks_batch_loss_after_step_max_steps_and_history():
    torch.manual_seed(0)
    x, y = torch.rand(64, 4), torch.randint(0, 3, (64,))
    loader = [(x[i:i + 8], y[i:i + 8], torch.ones(8)) for i in range(0, 64, 8)]  # 3-tuples
    model = torch.nn.Linear(4, 3)
    seen = []

    def batch_loss(m, batch):
        assert len(batch) == 3
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1]) * batch[2].mean()

    def after_step(step):
        seen.append(step)
        return step == 5                                   # True stops training

    h = train.fit(model, loader, epochs=3, batch_loss=batch_loss, after_step=after_step,
                  progress=False)
    assert seen == [1, 2, 3, 4, 5] and h.steps == 5 and len(h.step_loss) == 5
    assert h.examples == 40 and 0 < h.train_seconds <= h.seconds
    h = train.fit(model, loader, epochs=3, max_steps=10, history=h, progress=False)
    assert h.steps == 15 and len(h.train_loss) == 3       # 1 + 2 epochs, the last one partial
    with pytest.raises(ValueError, match="not both"):
        train.fit(model, loader, loss_fn=torch.nn.functional.cross_entropy,
                  batch_loss=batch_loss)
    with pytest.raises(ValueError, match="precision"):
        train.fit(model, loader, precision="int8")
    with pytest.raises(train.NonFiniteLossError, match="lower the learning rate") as err:
        train.fit(model, loader, batch_loss=lambda m, b: m(b[0]).sum() * float("nan"),
                  progress=False)
    assert err.value.step == 0


def test_fit_bf16_autocast_keeps_fp32_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    loader = [(torch.rand(8, 4), torch.randint(0, 3, (8,)))] * 3
    h = train.fit(model, loader, precision="bf16", progress=False)
    assert model.weight.dtype == torch.float32 and h.steps == 3


def test_evaluate_accepts_a_predict_function():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    data = [(torch.rand(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    acc = train.evaluate(model, data)
    assert train.evaluate(lambda b: model(b).detach().numpy(), data) == acc
    with pytest.raises(TypeError, match="model"):
        train.evaluate(3, data)
