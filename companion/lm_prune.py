"""Pruning a language model without retraining: magnitude vs Wanda, unstructured vs 2:4.

* **Magnitude**: the score of a weight is ``|W_ij|``.
* **Wanda** (Sun et al. 2024): ``|W_ij| * ||X_j||_2``, the weight times the norm
  of its input channel over calibration tokens, compared *within each output
  row*; a small weight on a loud channel survives.
* **Patterns**: ``"unstructured"`` removes the lowest ``sparsity`` fraction of
  each row; ``"2:4"`` keeps the two best of every four consecutive input
  weights (50% exactly), the pattern NVIDIA's sparse tensor cores run at up
  to twice the dense speed. On a CPU (and in PyTorch's dense kernels) zeros
  cost as much as any other number: neither pattern is faster here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ._checks import check_choice, check_float, check_module, check_tensor
from .lm_calibrate import block_inputs, in_blocks, linears
from .train import clone

__all__ = ["prune_scores", "prune_mask", "prune_lm"]


def prune_scores(weight: torch.Tensor, input_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``|W|`` (magnitude), or ``|W| * ||X_j||`` when the input-channel norms are given."""
    weight = check_tensor(weight, "weight", floating=True)
    score = weight.detach().abs()
    if input_norm is None:
        return score
    input_norm = check_tensor(input_norm, "input_norm", floating=True)
    if weight.dim() != 2 or input_norm.shape != (weight.shape[1],):
        raise ValueError("input_norm must have one entry per input column of weight")
    return score * input_norm[None, :]


def prune_mask(scores: torch.Tensor, sparsity: float = 0.5, pattern: str = "unstructured"
               ) -> torch.Tensor:
    """Boolean keep-mask of a ``(out, in)`` score matrix, row by row."""
    scores = check_tensor(scores, "scores", floating=True)
    check_choice(pattern, "pattern", ("unstructured", "2:4"))
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D, got shape {tuple(scores.shape)}")
    if pattern == "2:4":
        if scores.shape[1] % 4:
            raise ValueError("2:4 needs input features divisible by 4")
        groups = scores.reshape(scores.shape[0], -1, 4)
        top = groups.topk(2, dim=-1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
        return keep.reshape(scores.shape)
    sparsity = check_float(sparsity, "sparsity", min_value=0.0, max_value=1.0,
                           max_inclusive=False)
    k = int(scores.shape[1] * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        drop = scores.topk(k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep


def prune_lm(model: nn.Module, *, sparsity: float = 0.5, method: str = "wanda",
             pattern: str = "unstructured", calibration: Iterable[torch.Tensor] | None = None,
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """A copy of ``model`` with the chosen linear weights pruned (zeros written in).

    Args:
        sparsity: fraction removed per row (ignored by ``"2:4"``, which is 50%).
        method: ``"magnitude"`` or ``"wanda"`` (needs ``calibration``, an
            iterable of token batches). Wanda goes block by block, as the paper
            does: each block's input norms come from the outputs of the
            already pruned blocks before it
            (:func:`companion.lm_calibrate.block_inputs`).
        pattern: ``"unstructured"`` or ``"2:4"``.
        filter_fn: ``filter_fn(module, name)``; default: the linears inside the
            decoder blocks (:func:`companion.lm_calibrate.in_blocks`; the LM
            head, whose rows are the vocabulary, is kept).
    """
    check_module(model, "model")
    check_choice(method, "method", ("magnitude", "wanda"))
    check_choice(pattern, "pattern", ("unstructured", "2:4"))
    check_float(sparsity, "sparsity", min_value=0.0, max_value=1.0, max_inclusive=False)
    if method == "wanda" and calibration is None:
        raise ValueError("method='wanda' needs calibration batches")
    out = clone(model).eval()
    chosen = filter_fn or in_blocks(out)
    layers = dict(linears(out, chosen))
    if not layers:
        raise ValueError("model has no nn.Linear chosen by filter_fn")

    def prune_(name: str, norm: torch.Tensor | None) -> None:
        lin = layers[name]
        keep = prune_mask(prune_scores(lin.weight, norm), sparsity, pattern)
        with torch.no_grad():
            lin.weight.mul_(keep)

    if method == "magnitude":
        for name in layers:
            prune_(name, None)
    else:
        for bc in block_inputs(out, calibration, chosen):
            for name, x in bc.inputs.items():
                prune_(name, x.pow(2).sum(0).sqrt())
    return out
