"""Accuracy and logits of a model (or any predict function) over a loader: the
library's one accuracy function, :func:`evaluate`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_callable, evaluating

OutputFn = Callable[[Any], torch.Tensor]


def _device_batch(batch: Any, device: torch.device, name: str = "loader", *,
                  labelled: bool = True) -> tuple:
    """``batch`` as a tuple ``(inputs, labels, ...)``, its tensors moved to ``device``.

    The library's one batch mover: :func:`fit` passes every item to its
    ``batch_loss``; :func:`predict_logits` and :func:`evaluate` read the first
    two and ignore the rest (a distillation loader's teacher logits, say).
    ``labelled=False`` accepts a one-item tuple (a ``batch_loss`` without labels).

    Raises:
        TypeError: ``batch`` is not a tuple or list (a bare input tensor).
        ValueError: it holds fewer than two items (no labels) while ``labelled``.
    """
    if isinstance(batch, torch.Tensor) or not isinstance(batch, (tuple, list)):
        raise TypeError(f"{name} must yield (inputs, labels, ...) tuples, got a "
                        f"{type(batch).__name__}")
    if len(batch) < (2 if labelled else 1):
        raise ValueError(f"{name} must yield (inputs, labels, ...) tuples, got a "
                         f"{type(batch).__name__} of {len(batch)} item(s): no labels")
    return tuple(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t
                 for t in batch)


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor in a model's output (the default ``output_fn`` of the library).

    A tensor is returned as it is. From a structured output it takes:

    * a Mapping (a dict, a HuggingFace ``ModelOutput``) with a ``"logits"`` key: that value;
    * an object with a ``logits`` tensor attribute (a dataclass, a named tuple): that;
    * a tuple or list whose first element is a tensor: the first element.

    Args:
        output: what ``model(x)`` returned.

    Returns:
        The logits tensor (the same object, not a copy).

    Raises:
        TypeError: no logits tensor could be found; pass ``output_fn=`` to say
            where the logits are (e.g. ``output_fn=lambda out: out["scores"]``).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"output: the model returned a {type(output).__name__} without a logits tensor "
                    "(no tensor, no 'logits' key or attribute, no tensor first in a tuple): "
                    "pass output_fn=, a function that maps the model's output to its logits")


def _output_fn(output_fn: OutputFn | None) -> OutputFn:
    """``output_fn`` checked, wrapped so that its result must be a tensor; default logits_of."""
    if output_fn is None:
        return logits_of
    check_callable(output_fn, "output_fn")

    def apply(output: Any) -> torch.Tensor:
        logits = output_fn(output)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"output_fn must return a torch.Tensor, got {type(logits).__name__}")
        return logits

    return apply


def _no_batch(name: str) -> ValueError:
    return ValueError(f"{name} yielded no batch (an empty loader)")


def _check_not_empty(loader: Iterable, name: str) -> None:
    """Refuse a loader whose ``len`` is 0 before any work starts."""
    if loader is None or not isinstance(loader, Iterable):
        raise TypeError(f"{name} must be an iterable of batches, got {type(loader).__name__}")
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise _no_batch(name)


Predictor = nn.Module | Callable[[torch.Tensor], Any]


@torch.no_grad()
def predict_logits(model: Predictor, loader: Iterable,
                   device: torch.device | str | None = None, *,
                   output_fn: OutputFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and labels of ``loader``, computed in eval mode (mode restored after).

    Args:
        model: an ``nn.Module``, run in eval mode under ``no_grad`` (its modes
            are restored); or any ``predict(inputs) -> logits`` callable (an
            ONNX Runtime or LiteRT runner, a compiled model), whose result may
            be a NumPy array.
        loader: yields ``(inputs, labels)`` tuples, or longer ones (the loaders
            :func:`fit` accepts; items after the labels are ignored).
        device: default: the device of the model's parameters (CPU for a callable).
        output_fn: maps ``model(x)`` to its logits tensor; default :func:`logits_of`
            (a tensor as is, else the ``logits`` of a dict / ``ModelOutput`` /
            dataclass, or the first element of a tuple).

    Raises:
        ValueError: ``loader`` yielded no batch, or a batch without labels.
        TypeError: ``loader`` is not an iterable of ``(inputs, labels, ...)``
            tuples; ``model`` is neither a module nor callable, or its output
            holds no logits tensor (pass ``output_fn``).
    """
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a predict(inputs) -> logits "
                            f"callable, got {type(model).__name__}")
        predict, mode = model, contextlib.nullcontext()
        device = torch.device(device) if device is not None else torch.device("cpu")
    else:
        predict, mode = model, evaluating(model)
        device = torch.device(device) if device is not None else _model_device(model)
    _check_not_empty(loader, "loader")
    get_logits = _output_fn(output_fn)
    logits, labels = [], []
    with mode:
        for batch in loader:
            x, y = _device_batch(batch, device)[:2]
            out = predict(x)
            if isinstance(out, np.ndarray):  # ONNX Runtime, LiteRT
                out = torch.from_numpy(out)
            logits.append(get_logits(out).float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    if not logits:
        raise ValueError("loader yielded no batch")
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: Predictor, loader: Iterable,
             device: torch.device | str | None = None, *,
             output_fn: OutputFn | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader``: the library's one accuracy.

    ``model`` is an ``nn.Module`` (eval mode, no gradients) or any
    ``predict(inputs) -> logits`` callable (an ONNX Runtime session's runner,
    say); ``loader`` yields ``(inputs, labels, ...)`` tuples (the loaders
    :func:`fit` accepts; items after the labels are ignored); ``output_fn``
    maps the model's output to its logits (default :func:`logits_of`); see
    :func:`predict_logits`, whose errors it raises.
    """
    logits, labels = predict_logits(model, loader, device, output_fn=output_fn)
    return (logits.argmax(1) == labels.to(logits.device)).float().mean().item()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
