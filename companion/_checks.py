"""Argument checks shared by the public functions (clear errors, never silent)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from numbers import Integral, Real
from typing import Any

import torch
from torch import nn

#: How many batches of a ``calibration=`` iterable the calibrating functions read when
#: the caller does not say (static int8, PT2E, ONNX Runtime, the report). One number,
#: named once: 8 batches of 32-128 samples fix every observer's range on the book's data.
CALIBRATION_BATCHES = 8

#: Loggers that print notices when torchao is first imported on a CPU machine: its
#: optional CUDA kernels that do not load, and pytree's deprecation of its Enum
#: registrations (silenced with :func:`quiet_loggers` where companion imports it).
TORCHAO_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


def check_module(value: Any, name: str) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_int(value: Any, name: str, *, min_value: int | None = None,
              max_value: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A real ``bool`` (``"yes"``, 1 or None are refused, not taken for truth values)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")
    return value


def check_callable(value: Any, name: str, *, optional: bool = False) -> Any:
    """A callable (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_float(value: Any, name: str, *, min_value: float | None = None,
                max_value: float | None = None, min_inclusive: bool = True,
                max_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if min_value is not None:
        bad = value < min_value if min_inclusive else value <= min_value
        if bad:
            op = ">=" if min_inclusive else ">"
            raise ValueError(f"{name} must be {op} {min_value}, got {value}")
    if max_value is not None:
        bad = value > max_value if max_inclusive else value >= max_value
        if bad:
            op = "<=" if max_inclusive else "<"
            raise ValueError(f"{name} must be {op} {max_value}, got {value}")
    return value


def check_tensor(value: Any, name: str, *, floating: bool = False,
                 allow_empty: bool = False, finite: bool = True) -> torch.Tensor:
    """Check that ``value`` is a tensor, optionally floating, non-empty and finite."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not allow_empty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if finite and value.is_floating_point() and value.numel() and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_example_input(value: Any, name: str = "example_input") -> tuple:
    """A tensor or a tuple of tensors, as the positional inputs of one forward pass."""
    args = value if isinstance(value, tuple) else (value,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError(f"{name} must be a tensor or a tuple of tensors")
    return args


def check_calibration(value: Any, name: str = "calibration") -> Iterable:
    """An iterable of calibration batches (a DataLoader, a list of ``(inputs, labels)``
    pairs or of input tensors); a string, a lone tensor or array, or None is refused."""
    if isinstance(value, (str, bytes, torch.Tensor)) or type(value).__name__ == "ndarray" \
            or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader, or a list of "
                        f"(inputs, labels) pairs or input tensors; wrap one tensor x as [x]), "
                        f"got {type(value).__name__}")
    return value


def batch_inputs(batch: Any, name: str = "calibration") -> tuple:
    """The positional inputs of one ``(inputs, labels)`` batch or bare inputs batch."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return check_example_input(inputs, f"{name}: each batch's inputs")


def run_calibration(model: Callable[..., Any], calibration: Iterable,
                    num_batches: int | None = CALIBRATION_BATCHES, *,
                    device: torch.device | str | None = None,
                    name: str = "calibration") -> int:
    """Run ``model`` on the inputs of the first ``num_batches`` batches of ``calibration``.

    The library's one calibration loop (static int8 observers, fake-quantize
    ranges, PT2E, ONNX Runtime). Gradients are off; the caller sets the
    model's mode.

    Args:
        model: any callable taking a batch's inputs (a module, a prepared
            graph, a function that keeps the batches).
        calibration: yields ``(inputs, labels)`` or input tensors.
        num_batches: stop after this many batches; ``None``: all of them.
        device: move each batch's inputs here first (default: as they are).
        name: the argument's name in error messages.

    Returns:
        The number of samples run (the first dimension of each batch's inputs).

    Raises:
        TypeError: ``calibration`` is not an iterable of batches, or a batch's
            inputs are not tensors.
        ValueError: ``calibration`` yields no batch, or ``num_batches`` < 1.
    """
    check_calibration(calibration, name)
    if num_batches is not None:
        num_batches = check_int(num_batches, "num_batches", min_value=1)
    batches = samples = 0
    with torch.no_grad():
        for batch in calibration:
            args = batch_inputs(batch, name)
            if device is not None:
                args = tuple(a.to(device) for a in args)
            model(*args)
            batches += 1
            samples += int(args[0].shape[0]) if args[0].dim() else 1
            if num_batches is not None and batches >= num_batches:
                break
    if not batches:
        raise ValueError(f"{name} yielded no batch")
    return samples


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the loggers ``names`` (and so their children) to ERROR for the block: a
    library's notices silenced at their source, its errors still shown. Their levels
    are restored afterwards."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def first_line(err: BaseException, limit: int = 160) -> str:
    """One short line saying why: the first line of ``err``'s message, cut at ``limit``."""
    text = str(err).strip().splitlines()
    line = text[0].strip() if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def is_exported(model: nn.Module) -> bool:
    """Whether ``model`` came from ``torch.export`` (``ExportedProgram.module()``): such a
    module refuses ``.train()`` / ``.eval()``; its mode was fixed when it was exported."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    stateful = getattr(getattr(torch.export, "_unlift", None), "_StatefulGraphModule", None)
    if stateful is not None and isinstance(model, stateful):
        return True
    return "train" in vars(model) or "eval" in vars(model)   # methods patched by export


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's mode.

    A ``torch.export`` module (:func:`is_exported`) is left as it is: its mode is fixed.
    """
    if is_exported(model):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.train(mode)


def own_public_names(namespace: dict[str, Any], package: str) -> None:
    """Give the public names a package re-exports from its files the package as
    ``__module__``, as when it was one file (the API reference, pickles, and
    ``obj.__module__`` name ``companion.quant``, not ``companion.quant.affine``)."""
    for name, obj in list(namespace.items()):
        if not name.startswith("_") and (getattr(obj, "__module__", None) or "").startswith(
                f"{package}."):
            obj.__module__ = package


@contextlib.contextmanager
def silenced_fd(fd: int):
    """Send what C/C++ code writes to file descriptor ``fd`` to /dev/null for the block."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def in_ipython() -> bool:
    """True inside a Jupyter kernel or an IPython shell, False in a plain script.

    Asks without creating a shell: ``IPython.get_ipython()`` only reports one
    that exists (MyST-NB's ``glue`` would create one, so it runs only in here).
    """
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None
