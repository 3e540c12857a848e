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
from .lm_quant import _linears
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
            iterable of token batches; the input norms of all layers come from
            one pass of the dense model, where the paper feeds each block the
            outputs of the pruned blocks before it).
        pattern: ``"unstructured"`` or ``"2:4"``.
        filter_fn: ``filter_fn(module, name)``; default: every ``nn.Linear``
            except the LM head ``head`` (its rows are the vocabulary).
    """
    check_module(model, "model")
    check_choice(method, "method", ("magnitude", "wanda"))
    check_choice(pattern, "pattern", ("unstructured", "2:4"))
    check_float(sparsity, "sparsity", min_value=0.0, max_value=1.0, max_inclusive=False)
    calib: list[torch.Tensor] = []
    if method == "wanda":
        if calibration is None:
            raise ValueError("method='wanda' needs calibration batches")
        calib = list(calibration)
        if not calib:
            raise ValueError("calibration must yield at least one batch")
    chosen = filter_fn or (lambda _m, name: name != "head")
    out = clone(model).eval()
    layers = _linears(out, chosen)
    if not layers:
        raise ValueError("model has no nn.Linear chosen by filter_fn")
    norms = _input_norms(out, [m for _, m in layers], calib) if method == "wanda" else {}
    for _, lin in layers:
        keep = prune_mask(prune_scores(lin.weight, norms.get(lin)), sparsity, pattern)
        with torch.no_grad():
            lin.weight.mul_(keep)
    return out


@torch.inference_mode()
def _input_norms(model: nn.Module, layers: list[nn.Module], calibration: list[torch.Tensor]
                 ) -> dict[nn.Module, torch.Tensor]:
    """``||X_j||_2`` of every input channel of every layer, from one pass of ``model``."""
    sums = {m: None for m in layers}

    def hook(mod: nn.Module, args: tuple) -> None:
        sq = args[0].detach().float().pow(2).reshape(-1, args[0].shape[-1]).sum(0)
        sums[mod] = sq if sums[mod] is None else sums[mod] + sq

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        for batch in calibration:
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return {m: s.sqrt() for m, s in sums.items() if s is not None}


def _sparsity_of(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None
                ) -> float:
    """Fraction of exact zeros in the chosen linear weights."""
    layers = _linears(check_module(model, "model"), filter_fn)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(total, 1)
