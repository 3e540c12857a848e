"""Weight penalties: L1 and L2, added to the loss by the caller.

``loss = task_loss + lam * l1_penalty(model)`` drives weights toward zero;
``l2_penalty`` is the classic "weight decay" term. Biases and normalization
parameters are usually left out, which is what ``weights_only=True`` does
(only tensors with two or more dimensions: Linear and Conv weights).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_module

__all__ = ["l1_penalty", "l2_penalty", "penalized_params"]


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
