"""Seeding, device choice and a plain training loop with a progress bar."""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # text bars: widget bars would need JavaScript from a CDN in the book

from ._checks import (
    check_bool,
    check_callable,
    check_float,
    check_int,
    check_module,
    evaluating,
)

__all__ = ["set_seed", "default_device", "History", "fit", "evaluate", "predict_logits", "clone",
           "logits_of", "cached_training"]

OutputFn = Callable[[Any], torch.Tensor]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a seeded generator.

    Also asks cuDNN for deterministic kernels, so that the same seed gives
    the same run on the same machine.
    """
    seed = check_int(seed, "seed", min_value=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def default_device(prefer: str = "cuda") -> torch.device:
    """``cuda`` when asked for and available, else ``cpu``."""
    if prefer not in ("cuda", "cpu"):
        raise ValueError(f"prefer must be 'cuda' or 'cpu', got {prefer!r}")
    if prefer == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class History:
    """What :func:`fit` saw: per-epoch losses and accuracies, steps and wall time."""

    train_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def final_val_acc(self) -> float:
        """Validation accuracy after the last epoch (NaN without a validation set)."""
        return self.val_acc[-1] if self.val_acc else float("nan")

    @property
    def best_val_acc(self) -> float:
        """Best validation accuracy over the epochs (NaN without a validation set)."""
        return max(self.val_acc) if self.val_acc else float("nan")

    def __str__(self) -> str:
        rows = [f"{'epoch':>5}  {'train loss':>10}  {'val acc':>8}"]
        for i, loss in enumerate(self.train_loss):
            acc = f"{self.val_acc[i]:8.4f}" if i < len(self.val_acc) else f"{'-':>8}"
            rows.append(f"{i + 1:>5}  {loss:>10.4f}  {acc}")
        rows.append(f"{self.steps} optimizer steps in {self.seconds:.1f} s")
        return "\n".join(rows)


def _batches(loader: Iterable, device: torch.device):
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


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


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Iterable,
                   device: torch.device | str | None = None, *,
                   output_fn: OutputFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and labels of ``loader``, computed in eval mode (mode restored after).

    Args:
        model: run in eval mode under ``no_grad``; its modes are restored.
        loader: yields ``(inputs, labels)``.
        device: default: the device of the model's parameters.
        output_fn: maps ``model(x)`` to its logits tensor; default :func:`logits_of`
            (a tensor as is, else the ``logits`` of a dict / ``ModelOutput`` /
            dataclass, or the first element of a tuple).

    Raises:
        ValueError: ``loader`` yielded no batch.
        TypeError: the model's output holds no logits tensor (pass ``output_fn``).
    """
    check_module(model, "model")
    get_logits = _output_fn(output_fn)
    device = torch.device(device) if device is not None else _model_device(model)
    logits, labels = [], []
    with evaluating(model):
        for x, y in _batches(loader, device):
            logits.append(get_logits(model(x)).float().cpu())
            labels.append(y.cpu())
    if not logits:
        raise ValueError("loader yielded no batch")
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: Iterable,
             device: torch.device | str | None = None, *,
             output_fn: OutputFn | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader`` (eval mode, no gradients).

    ``output_fn`` maps the model's output to its logits (default :func:`logits_of`);
    see :func:`predict_logits`.
    """
    logits, labels = predict_logits(model, loader, device, output_fn=output_fn)
    return (logits.argmax(1) == labels).float().mean().item()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int = 1,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        val_loader: Iterable | None = None, scheduler: object | None = None,
        device: torch.device | str | None = None,
        after_step: Callable[[int], None] | None = None,
        progress: bool = True, desc: str = "train",
        output_fn: OutputFn | None = None) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
        model: trained in place (moved to ``device``).
        train_loader: yields ``(inputs, labels)``.
        epochs: number of passes over ``train_loader``.
        optimizer: default ``Adam(model.parameters(), lr)``.
        lr: learning rate of the default optimizer.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy.
        val_loader: if given, validation accuracy is measured after each epoch.
        scheduler: an LR scheduler stepped after every optimizer step.
        device: default :func:`default_device`.
        after_step: called with the global step number after each optimizer step
            (pruning schedules use it).
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        output_fn: maps ``model(x)`` to the logits given to ``loss_fn`` (and to
            the validation accuracy); default :func:`logits_of` (a tensor as
            is; the ``logits`` of a dict, ``ModelOutput`` or dataclass; the
            first element of a tuple).

    Raises:
        ValueError: ``train_loader`` yields no batch, or the loss becomes NaN
            or infinite (training stops there).
        TypeError: the model's output holds no logits tensor (pass ``output_fn``),
            or an argument of the wrong type.
    """
    check_module(model, "model")
    epochs = check_int(epochs, "epochs", min_value=1)
    check_float(lr, "lr", min_value=0.0, min_inclusive=False)
    check_bool(progress, "progress")
    check_callable(loss_fn, "loss_fn", optional=True)
    check_callable(after_step, "after_step", optional=True)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    _check_not_empty(train_loader, "train_loader")
    get_logits = _output_fn(output_fn)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.functional.cross_entropy
    history = History()
    start = time.perf_counter()
    total = epochs * len(train_loader) if hasattr(train_loader, "__len__") else None
    # In a terminal the bar refreshes every second. In a notebook (or a built
    # book page) every refresh stays as a line of output, so there it
    # refreshes every 15 s: a short run prints its start and its end.
    tty = sys.stderr.isatty()
    with tqdm(total=total, desc=desc, disable=not progress, leave=True,
              mininterval=1.0 if tty else 15.0) as bar:
        for epoch in range(epochs):
            model.train()
            running, count, epoch_steps = 0.0, 0, 0
            for x, y in _batches(train_loader, device):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(get_logits(model(x)), y)
                if not torch.isfinite(loss):
                    raise ValueError(f"loss became {loss.item()} at step {history.steps}; "
                                     "lower the learning rate")
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                history.steps += 1
                if after_step is not None:
                    after_step(history.steps)
                running += loss.item() * len(y)
                count += len(y)
                epoch_steps += 1
                bar.update(1)
            if epoch_steps == 0:
                raise _no_batch("train_loader")
            history.train_loss.append(running / max(count, 1))
            postfix = {"epoch": epoch + 1, "loss": f"{history.train_loss[-1]:.4f}"}
            if val_loader is not None:
                history.val_acc.append(evaluate(model, val_loader, device,
                                                output_fn=output_fn))
                postfix["val_acc"] = f"{history.val_acc[-1]:.4f}"
            bar.set_postfix(postfix, refresh=tty)
    history.seconds = time.perf_counter() - start
    return history


def cached_training(name: str, key: Mapping[str, Any], build: Callable[[], nn.Module],
                    fit_fn: Callable[[nn.Module], Any], *, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """Train a model once and reuse it: later calls with the same ``name`` and ``key``
    load the saved weights instead of training again.

    ``set_seed(seed)``, then ``model = build()`` and ``fit_fn(model)``; the
    state dict is saved (atomically) as ``<cache_dir>/<name>-<hash of key>.pt``
    (default ``cache_dir``: ``$COMPANION_CACHE/models``). The model comes back
    in eval mode either way.

    Args:
        name: a file-name-safe label (letters, digits, ``-``, ``_``).
        key: everything that changes the result (data, recipe, seed, versions),
            as JSON-serialisable values; a change to the *code* of ``fit_fn``
            that is not reflected in ``key`` is not noticed.
        build: makes the untrained model.
        fit_fn: trains it in place (its return value is ignored). Give it its
            own data loader: a ``DataLoader``'s shuffling generator moves on with
            every epoch, so training on a shared one makes the model depend on
            what ran before, and loading from the cache (no epochs run) would
            change what the shared loader yields afterwards.
    """
    import hashlib
    import json
    import re
    from pathlib import Path

    from .data import default_cache_dir

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"name must be letters, digits, '-' or '_', got {name!r}")
    if not isinstance(key, Mapping):
        raise TypeError(f"key must be a mapping, got {type(key).__name__}")
    check_callable(build, "build")
    check_callable(fit_fn, "fit_fn")
    seed = check_int(seed, "seed", min_value=0)
    blob = json.dumps({"key": dict(key), "seed": seed}, sort_keys=True, default=str)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    path = folder / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"
    set_seed(seed)
    model = check_module(build(), "build()")
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        fit_fn(model)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return model.eval()


def clone(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (used by the non-mutating functions of the library)."""
    return copy.deepcopy(check_module(model, "model"))
