"""L1 penalty -> magnitude threshold -> fine-tune, with a report of each stage."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from .._checks import check_float
from ..regularize import near_zero_fraction, penalized_loss
from ..train import evaluate, fit
from .unstructured import check_sparsity, prune_, sparsity


# --------------------------------------------------------------------------- L1 -> prune
@dataclass
class L1PruneReport:
    """What each stage of :func:`l1_prune_finetune_` left: exact zeros and accuracy."""

    exact_zeros_after_l1: float
    near_zero_after_l1: float
    sparsity_after_prune: float
    acc_after_l1: float
    acc_after_prune: float
    acc_after_finetune: float


def l1_prune_finetune_(model: nn.Module, train_loader: Iterable, val_loader: Iterable, *,
                       l1: float, sparsity_target: float, epochs: int = 2,
                       finetune_epochs: int = 1, lr: float = 1e-3,
                       near_zero: float = 1e-3, scope: str = "local",
                       progress: bool = False) -> L1PruneReport:
    """Train with an L1 penalty, mask the smallest weights, fine-tune (masks kept), in place.

    L1 alone leaves almost no exact zeros with SGD/Adam (weights hover near
    zero); the threshold makes them zero and fine-tuning recovers accuracy.

    Args:
        model: trained in place; ends pruned (call :func:`remove_` to strip masks).
        l1: penalty coefficient (> 0).
        sparsity_target: fraction of Linear/Conv weights masked after L1 training.
        epochs, finetune_epochs: training with L1, then without.
        near_zero: threshold for counting "near-zero" weights in the report.
        scope: ``"local"`` or ``"global"`` threshold (see :func:`prune_`).
    """
    check_float(l1, "l1", min_value=0.0, min_inclusive=False)
    sparsity_target = check_sparsity(sparsity_target, "sparsity_target")
    fit(model, train_loader, epochs=epochs, lr=lr, progress=progress,
        loss_fn=penalized_loss(model, l1=l1))
    exact, near, acc_l1 = (near_zero_fraction(model, 0.0), near_zero_fraction(model, near_zero),
                           evaluate(model, val_loader))
    prune_(model, sparsity_target, scope=scope)
    acc_pruned = evaluate(model, val_loader)
    fit(model, train_loader, epochs=finetune_epochs, lr=lr, progress=progress)
    return L1PruneReport(exact, near, sparsity(model), acc_l1, acc_pruned,
                         evaluate(model, val_loader))
