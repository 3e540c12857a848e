"""2:4 (N:M) semi-structured sparsity: the mask, and the CUDA sparse-tensor-core storage."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int, check_tensor


# --------------------------------------------------------------------------- 2:4
@torch.no_grad()
def semi_structured_mask(weight: torch.Tensor, *, n: int = 2, m: int = 4) -> torch.Tensor:
    """The N:M pattern (2:4 by default): in every group of ``m`` consecutive inputs
    keep the ``n`` largest ``|weight|``.

    The library's one N:M mask: :func:`to_semi_structured_` and
    :func:`companion.lm_prune.prune_mask` (``pattern="2:4"``) use it.

    Args:
        weight: a 2-D ``(out, in)`` tensor: a weight (its magnitudes are
            compared) or any non-negative score matrix of its shape (Wanda's
            ``|W| * ||X||``).
        n: entries kept per group, ``1 <= n <= m``.
        m: group length along the input axis; the columns must be a multiple of it.

    Returns:
        A boolean keep-mask of the shape of ``weight``, with exactly ``n``
        ``True`` in every group (ties broken by position).

    Raises:
        TypeError: ``weight`` is not a floating tensor, ``n``/``m`` not ints.
        ValueError: ``weight`` is not 2-D or its columns are not a multiple of
            ``m``; ``n`` outside ``[1, m]``.
    """
    check_tensor(weight, "weight", floating=True)
    m = check_int(m, "m", min_value=1)
    n = check_int(n, "n", min_value=1, max_value=m)
    if weight.dim() != 2 or weight.shape[1] % m:
        raise ValueError(f"weight must be 2-D with a multiple of {m} columns, "
                         f"got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(-1, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, groups.topk(n, dim=1).indices, True)
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
