"""Weight penalties: L1 and L2, added to the loss by the caller.

``loss = task_loss + lam * l1_penalty(model)`` drives weights toward zero;
``l2_penalty`` is the classic "weight decay" term. Biases and normalization
parameters are usually left out, which is what ``weights_only=True`` does
(only tensors with two or more dimensions: Linear and Conv weights).

:func:`penalized_loss` wraps a loss for :func:`companion.train.fit`;
:func:`generalization_gap` measures over-fitting (train minus validation accuracy);
:func:`near_zero_fraction` shows that L1 pushes weights *toward* zero but
leaves few exact zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ._checks import check_float, check_module
from .train import evaluate

__all__ = ["l1_penalty", "l2_penalty", "penalized_params", "penalized_loss",
           "generalization_gap", "near_zero_fraction"]


def penalized_params(model: nn.Module, weights_only: bool = True) -> list[torch.Tensor]:
    """The parameters a penalty applies to (matrices and kernels only by default)."""
    check_module(model, "model")
    return [p for p in model.parameters() if p.requires_grad and (p.dim() > 1 or not weights_only)]


def l1_penalty(model: nn.Module, weights_only: bool = True) -> torch.Tensor:
    r"""L1 norm :math:`\sum_i |w_i|` of the penalized parameters (a scalar with gradient)."""
    params = penalized_params(model, weights_only)
    if not params:
        raise ValueError("model has no parameters to penalize")
    return sum(p.abs().sum() for p in params)


def l2_penalty(model: nn.Module, weights_only: bool = True) -> torch.Tensor:
    r"""Half the squared L2 norm, :math:`\tfrac12 \sum_i w_i^2` (its gradient is the weights)."""
    params = penalized_params(model, weights_only)
    if not params:
        raise ValueError("model has no parameters to penalize")
    return 0.5 * sum(p.pow(2).sum() for p in params)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def penalized_loss(model: nn.Module, *, l1: float = 0.0, l2: float = 0.0,
                   loss_fn: LossFn | None = None, weights_only: bool = True) -> LossFn:
    """A ``loss_fn(logits, labels)`` for :func:`~companion.train.fit` with penalties added.

    Args:
        model: the model whose parameters are penalized (read at every call).
        l1: coefficient of :func:`l1_penalty` (>= 0).
        l2: coefficient of :func:`l2_penalty` (>= 0); with plain SGD this equals
            weight decay ``l2``; with Adam it does not (see AdamW).
        loss_fn: the task loss; default cross-entropy.
        weights_only: penalize only matrices and kernels.

    Returns:
        ``loss_fn(logits, labels) + l1 * L1 + l2 * L2``.

    Raises:
        ValueError: a negative coefficient.
    """
    check_module(model, "model")
    l1 = check_float(l1, "l1", min_value=0.0)
    l2 = check_float(l2, "l2", min_value=0.0)
    base = loss_fn or nn.functional.cross_entropy

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total = base(logits, labels)
        if l1:
            total = total + l1 * l1_penalty(model, weights_only)
        if l2:
            total = total + l2 * l2_penalty(model, weights_only)
        return total

    return loss


def generalization_gap(model: nn.Module, train_loader: Iterable, val_loader: Iterable) -> float:
    """Training accuracy minus validation accuracy (positive: the model over-fits)."""
    return evaluate(model, train_loader) - evaluate(model, val_loader)


@torch.no_grad()
def near_zero_fraction(model: nn.Module, threshold: float = 1e-3,
                       weights_only: bool = True) -> float:
    """Fraction of penalized weights with ``|w| < threshold`` (``threshold=0``: exact zeros)."""
    threshold = check_float(threshold, "threshold", min_value=0.0)
    params = penalized_params(model, weights_only)
    total = sum(p.numel() for p in params)
    if threshold == 0:
        small = sum(int((p == 0).sum()) for p in params)
    else:
        small = sum(int((p.abs() < threshold).sum()) for p in params)
    return small / total if total else 0.0
