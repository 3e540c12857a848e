"""Bad loaders given to train.evaluate / predict_logits / fit: clear errors that name the
argument, and the one batch mover that lets evaluate read the loaders fit accepts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from companion import train


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


@pytest.mark.parametrize("fn", [train.evaluate, train.predict_logits])
@pytest.mark.parametrize("loader", [None, 3, object()])
def test_a_loader_that_is_not_iterable_is_refused_by_name(fn, loader):
    with pytest.raises(TypeError, match=r"^loader must be an iterable of batches"):
        fn(_model(), loader)


@pytest.mark.parametrize("fn", [train.evaluate, train.predict_logits])
def test_a_loader_of_bare_inputs_is_refused_by_name(fn):
    x, _ = _data()
    bare = DataLoader(TensorDataset(x), batch_size=8)  # yields [inputs]: no labels
    with pytest.raises(ValueError, match=r"^loader must yield \(inputs, labels, \.\.\.\) tuples"):
        fn(_model(), bare)
    tensors = list(x.split(8))  # yields bare tensors
    with pytest.raises(TypeError, match=r"^loader must yield \(inputs, labels, \.\.\.\) tuples, "
                                        r"got a Tensor"):
        fn(_model(), tensors)


def test_evaluate_reads_the_distillation_loaders_fit_accepts():
    x, y = _data()
    model = _model()
    with torch.no_grad():
        teacher_logits = model(x) + 1.0
    plain = DataLoader(TensorDataset(x, y), batch_size=8)
    with_logits = DataLoader(TensorDataset(x, y, teacher_logits), batch_size=8)
    logits, labels = train.predict_logits(model, with_logits)
    ref_logits, ref_labels = train.predict_logits(model, plain)
    assert torch.equal(logits, ref_logits) and torch.equal(labels, ref_labels)
    assert train.evaluate(model, with_logits) == train.evaluate(model, plain)
    # and fit trains on the same loader, its batch_loss seeing all three items
    seen = []

    def batch_loss(m: nn.Module, batch: tuple) -> torch.Tensor:
        seen.append(len(batch))
        return nn.functional.mse_loss(m(batch[0]), batch[2])

    train.fit(model, with_logits, batch_loss=batch_loss, progress=False)
    assert seen == [3, 3, 3]


def test_fit_refuses_bare_inputs_by_name_unless_its_batch_loss_needs_no_labels():
    x, _ = _data()
    with pytest.raises(TypeError, match=r"^train_loader must yield \(inputs, labels, \.\.\.\)"):
        train.fit(_model(), list(x.split(8)), progress=False)
    inputs_only = DataLoader(TensorDataset(x), batch_size=8)
    with pytest.raises(ValueError, match=r"^train_loader must yield \(inputs, labels, \.\.\.\)"):
        train.fit(_model(), inputs_only, progress=False)
    history = train.fit(_model(), inputs_only, progress=False,
                        batch_loss=lambda m, batch: m(batch[0]).pow(2).mean())
    assert history.steps == 3


def test_empty_loader_is_refused_by_name():
    with pytest.raises(ValueError, match="loader yielded no batch"):
        train.evaluate(_model(), [])
