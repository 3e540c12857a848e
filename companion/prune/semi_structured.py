"""2:4 semi-structured sparsity: the mask, and the CUDA sparse-tensor-core storage."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_tensor


# --------------------------------------------------------------------------- 2:4
@torch.no_grad()
def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 pattern: in every group of 4 consecutive inputs keep the 2 largest ``|w|``.

    Raises:
        ValueError: ``weight`` is not 2-D or its columns are not a multiple of 4.
    """
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2 or weight.shape[1] % 4:
        raise ValueError(f"weight must be 2-D with a multiple of 4 columns, "
                         f"got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(-1, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, groups.topk(2, dim=1).indices, True)
    return mask.reshape(weight.shape)


@torch.no_grad()
def to_semi_structured_(linear: nn.Linear) -> nn.Linear:
    """Apply the 2:4 mask and store the weight as a semi-structured sparse tensor (CUDA only).

    The layer must be on a CUDA device in float16/bfloat16 (sparse tensor cores,
    Ampere or newer; Mishra et al. 2021).

    Raises:
        TypeError: not an ``nn.Linear``.
        RuntimeError: no CUDA device, or the layer is not on it.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if not torch.cuda.is_available() or linear.weight.device.type != "cuda":
        raise RuntimeError("linear: 2:4 semi-structured sparsity needs the layer on a CUDA device")
    w = linear.weight * semi_structured_mask(linear.weight)
    linear.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(w), requires_grad=False)
    return linear
