"""Pruning a language model without retraining: magnitude vs Wanda, unstructured vs 2:4.

* **Magnitude**: the score of a weight is ``|W_ij|``.
* **Wanda** (Sun et al. 2024): ``|W_ij| * ||X_j||_2``, the weight times the norm
  of its input channel over calibration tokens, compared *within each output
  row*; a small weight on a loud channel survives.
* **Patterns**: ``"unstructured"`` removes the lowest ``sparsity`` fraction of
  each row; ``"2:4"`` keeps the two best of every four consecutive input
  weights (50% exactly; :func:`companion.prune.semi_structured_mask`), the
  pattern NVIDIA's sparse tensor cores run at up to twice the dense speed. On
  a CPU (and in PyTorch's dense kernels) zeros cost as much as any other
  number: neither pattern is faster here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_callable, check_choice, check_float, check_module, check_tensor
from .lm_calibrate import block_inputs, in_blocks, linears
from .prune import check_sparsity, semi_structured_mask
from .train import clone

__all__ = ["MagnitudeConfig", "WandaConfig", "prune_scores", "prune_mask", "prune_lm"]

_PATTERNS = ("unstructured", "2:4")


@dataclass(frozen=True)
class _SparsityPattern:
    """The two fields every pruning config has, checked once."""

    sparsity: float = 0.5
    pattern: str = "unstructured"

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        check_choice(self.pattern, "pattern", _PATTERNS)
        if self.pattern == "2:4" and self.sparsity != 0.5:
            raise ValueError(f"sparsity: pattern='2:4' removes exactly half of the weights; "
                             f"give sparsity=0.5 (the default), got {self.sparsity}")


@dataclass(frozen=True)
class MagnitudeConfig(_SparsityPattern):
    """Prune by magnitude ``|W_ij|``, row by row; needs no calibration.

    Args:
        sparsity: fraction removed from each output row, in [0, 1); must be
            0.5 with ``pattern="2:4"``.
        pattern: ``"unstructured"`` (any weights of the row) or ``"2:4"``
            (two of every four consecutive input weights).

    Raises:
        ValueError: ``sparsity`` outside [0, 1) (or not 0.5 for 2:4), an
            unknown ``pattern``.
    """


@dataclass(frozen=True)
class WandaConfig(_SparsityPattern):
    """Prune by Wanda's ``|W_ij| * ||X_j||_2`` (Sun et al. 2024), row by row.

    :func:`prune_lm` needs ``calibration`` batches for it and goes block by
    block, as the paper does: each block's input norms come from the outputs
    of the already pruned blocks before it
    (:func:`companion.lm_calibrate.block_inputs`).

    Args:
        sparsity: fraction removed from each output row, in [0, 1); must be
            0.5 with ``pattern="2:4"``.
        pattern: ``"unstructured"`` or ``"2:4"``.

    Raises:
        ValueError: ``sparsity`` outside [0, 1) (or not 0.5 for 2:4), an
            unknown ``pattern``.
    """


def prune_scores(weight: torch.Tensor, input_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``|W|`` (magnitude), or ``|W| * ||X_j||`` when the input-channel norms are given.

    Args:
        weight: a floating tensor; 2-D ``(out, in)`` when ``input_norm`` is given.
        input_norm: one non-negative norm per input column of ``weight``.

    Raises:
        TypeError: a non-floating tensor.
        ValueError: ``input_norm`` has not one entry per input column.
    """
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
    """Boolean keep-mask of a ``(out, in)`` score matrix, row by row.

    Args:
        scores: non-negative scores (:func:`prune_scores`), 2-D.
        sparsity: fraction dropped from each row (``int(in * sparsity)``
            lowest scores), in [0, 1); ignored by ``"2:4"``.
        pattern: ``"unstructured"``, or ``"2:4"``: the two highest scores of
            every four consecutive inputs
            (:func:`companion.prune.semi_structured_mask`).

    Raises:
        TypeError: ``scores`` is not a floating tensor.
        ValueError: ``scores`` not 2-D, ``sparsity`` outside [0, 1), an unknown
            ``pattern``, or ``"2:4"`` on a column count not divisible by 4.
    """
    scores = check_tensor(scores, "scores", floating=True)
    check_choice(pattern, "pattern", _PATTERNS)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D, got shape {tuple(scores.shape)}")
    if pattern == "2:4":
        if scores.shape[1] % 4:
            raise ValueError(f"scores: 2:4 needs input features divisible by 4, "
                             f"got {scores.shape[1]}")
        return semi_structured_mask(scores)
    sparsity = check_float(sparsity, "sparsity", min_value=0.0, max_value=1.0,
                           max_inclusive=False)
    k = int(scores.shape[1] * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        drop = scores.topk(k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep


def prune_lm(model: nn.Module, config: MagnitudeConfig | WandaConfig, *,
             calibration: Iterable[torch.Tensor] | None = None,
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """A copy of ``model`` with the chosen linear weights pruned (zeros written in).

    Args:
        model: a decoder language model (not modified).
        config: :class:`MagnitudeConfig` or :class:`WandaConfig`: the score,
            the sparsity and the pattern.
        calibration: an iterable of token batches; needed by
            :class:`WandaConfig`, ignored by :class:`MagnitudeConfig`.
        filter_fn: ``filter_fn(module, name)``; default: the linears inside the
            decoder blocks (:func:`companion.lm_calibrate.in_blocks`; the LM
            head, whose rows are the vocabulary, is kept).

    Returns:
        The pruned copy, in eval mode.

    Raises:
        TypeError: ``config`` is not a :class:`MagnitudeConfig` or
            :class:`WandaConfig`, ``model`` not a module, ``filter_fn`` not callable.
        ValueError: :class:`WandaConfig` without ``calibration``; a
            ``filter_fn`` that chooses no ``nn.Linear``.
    """
    check_module(model, "model")
    if not isinstance(config, (MagnitudeConfig, WandaConfig)):
        raise TypeError(f"config must be a MagnitudeConfig or a WandaConfig, "
                        f"got {type(config).__name__}")
    check_callable(filter_fn, "filter_fn", optional=True)
    wanda = isinstance(config, WandaConfig)
    if wanda and calibration is None:
        raise ValueError("calibration: WandaConfig needs calibration batches (token ids)")
    out = clone(model).eval()
    chosen = filter_fn or in_blocks(out)
    layers = dict(linears(out, chosen))
    if not layers:
        raise ValueError("filter_fn: the model has no nn.Linear chosen by filter_fn")

    def prune_layer_(name: str, norm: torch.Tensor | None) -> None:
        lin = layers[name]
        keep = prune_mask(prune_scores(lin.weight, norm), config.sparsity, config.pattern)
        with torch.no_grad():
            lin.weight.mul_(keep)

    if not wanda:
        for name in layers:
            prune_layer_(name, None)
    else:
        for bc in block_inputs(out, calibration, chosen):
            for name, x in bc.inputs.items():
                prune_layer_(name, x.pow(2).sum(0).sqrt())
    return out
