"""Weight penalties (L1, L2), decoupled weight decay and over-fitting measurements.

``loss = task_loss + lam * l1_penalty(model)`` drives weights toward zero;
``l2_penalty`` is the classic "weight decay" term. Biases and normalization
parameters are usually left out, which is what ``weights_only=True`` does
(only tensors with two or more dimensions: Linear and Conv weights).

:func:`penalized_loss` wraps a loss for :func:`companion.train.fit`;
:func:`decay_param_groups` gives optimizer parameter groups that decay the
same tensors (for ``torch.optim.AdamW``, whose decay is decoupled from the
gradient); :func:`measure_gap` measures
over-fitting (train minus held-out accuracy); :func:`corrupt_labels` makes
over-fitting easy to provoke; :func:`near_zero_fraction` shows that L1 pushes
weights *toward* zero but leaves few exact zeros; :func:`soft_threshold_` is
the proximal step of L1 that does produce exact zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_float, check_int, check_module
from .train import evaluate

__all__ = ["l1_penalty", "l2_penalty", "penalized_params", "penalized_loss",
           "decay_param_groups", "GapReport", "measure_gap",
           "corrupt_labels", "near_zero_fraction", "soft_threshold_"]


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


@torch.no_grad()
def soft_threshold_(model: nn.Module, threshold: float, weights_only: bool = True) -> nn.Module:
    r"""The proximal step of an L1 penalty, in place: :math:`w \leftarrow
    \operatorname{sign}(w)\max(|w| - t, 0)` for the penalized parameters.

    After a plain gradient step with learning rate :math:`\eta` on the loss
    *without* the L1 term, ``soft_threshold_(model, lr * lam)`` completes a
    proximal-gradient (ISTA) step on ``loss + lam * l1_penalty(model)``: every
    weight within ``threshold`` of zero becomes exactly zero. Use it as
    ``train.fit(..., after_step=lambda step: soft_threshold_(model, lr * lam))``
    with ``torch.optim.SGD``. Returns ``model``.
    """
    threshold = check_float(threshold, "threshold", min_value=0.0)
    for p in penalized_params(model, weights_only):
        p.copy_(p.sign() * (p.abs() - threshold).clamp_min(0))
    return model


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


def decay_param_groups(model: nn.Module, weight_decay: float,
                       weights_only: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``weight_decay`` on the penalized tensors, 0 on the rest.

    ``torch.optim.AdamW(decay_param_groups(model, 0.1), lr=1e-3)`` decays the
    matrices and kernels (the tensors :func:`l2_penalty` would penalize) and
    leaves biases and normalization parameters alone.

    Raises:
        ValueError: a negative ``weight_decay``.
    """
    weight_decay = check_float(weight_decay, "weight_decay", min_value=0.0)
    decayed = penalized_params(model, weights_only)
    ids = {id(p) for p in decayed}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


@dataclass
class GapReport:
    """Accuracy on the training data and on held-out data; ``gap`` is their difference."""

    train_acc: float
    test_acc: float

    @property
    def gap(self) -> float:
        """Train minus held-out accuracy (positive: the model does better on what it saw)."""
        return self.train_acc - self.test_acc

    def as_row(self) -> dict[str, Any]:
        return {**asdict(self), "gap": self.gap}

    def __str__(self) -> str:
        return (f"train acc {self.train_acc:.4f}, test acc {self.test_acc:.4f}, "
                f"gap {self.gap:+.4f}")


def measure_gap(model: nn.Module, train_loader: Iterable, test_loader: Iterable) -> GapReport:
    """Accuracy (eval mode: dropout off) on ``train_loader`` and on ``test_loader``."""
    check_module(model, "model")
    return GapReport(evaluate(model, train_loader), evaluate(model, test_loader))


def corrupt_labels(labels: np.ndarray | torch.Tensor, fraction: float, num_classes: int = 10,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Replace a random ``fraction`` of the labels by labels drawn uniformly at random.

    A drawn label can equal the true one, so about ``fraction * (1 - 1/num_classes)``
    of the labels end up wrong; the returned mask marks exactly those. The
    input is not modified.

    Args:
        labels: 1-D integer class labels in ``[0, num_classes)``.
        fraction: share of the labels to redraw, in [0, 1].
        num_classes: number of classes.
        seed: seed of the random choice.

    Returns:
        ``(new_labels, wrong)``: an ``int64`` array and a boolean mask of the
        labels that differ from the originals.

    Raises:
        TypeError: ``labels`` is not an integer array or tensor.
        ValueError: ``labels`` is not 1-D, or holds a label outside the classes.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError("labels must be an integer numpy array or tensor, got "
                        f"{type(labels).__name__}"
                        f"{' of dtype ' + str(labels.dtype) if hasattr(labels, 'dtype') else ''}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    fraction = check_float(fraction, "fraction", min_value=0.0, max_value=1.0)
    num_classes = check_int(num_classes, "num_classes", min_value=2)
    seed = check_int(seed, "seed", min_value=0)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    redraw = rng.random(labels.shape[0]) < fraction
    new = labels.astype(np.int64, copy=True)
    new[redraw] = rng.integers(0, num_classes, size=int(redraw.sum()))
    return new, new != labels


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
