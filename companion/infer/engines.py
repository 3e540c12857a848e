"""Plain float32 baselines and PyTorch engines (eager, ``torch.compile``), and the
row that records one engine's latency, size and accuracy.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._checks import check_module, check_tensor
from .._checks import is_exported as _is_exported
from ..measure import LatencyComparison, compare_latency
from ..train import clone


# --------------------------------------------------------------------------- fp32 baseline
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each BatchNorm folded into the conv before it.

    In eval mode ``BN(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(v + eps)`` and
    ``b' = (b - m) * g / sqrt(v + eps) + beta`` per output channel, so the
    normalization costs nothing at inference. Uses ``torch.fx`` (the model
    must be symbolically traceable); the result computes the same function
    to float rounding.

    Raises:
        ValueError: the model cannot be traced by ``torch.fx``.
    """
    from torch.fx.experimental.optimization import fuse

    check_module(model, "model")
    if is_exported(model):
        raise ValueError("model: cannot fold batch norm in a torch.export program "
                         "(its graph is fixed); fold before exporting")
    copy = clone(model).eval()
    try:
        return fuse(copy, inplace=True)
    except Exception as err:  # noqa: BLE001 - tracing errors come in many types
        raise ValueError(f"model: cannot fold batch norm, torch.fx could not trace it "
                         f"({type(err).__name__}: {err})") from err


@dataclass
class Fp32Baseline:
    """The fastest plain float32 way to run a model here, and the comparison that chose it."""

    name: str
    model: nn.Module
    comparison: LatencyComparison

    def __str__(self) -> str:
        return f"fastest plain fp32: {self.name}\n{self.comparison}"


def fastest_fp32(model: nn.Module, example_input: torch.Tensor, *, threads: int = 1,
                 repeats: int = 20) -> Fp32Baseline:
    """Find the fastest plain float32 way to run ``model``: the baseline of a speed-up.

    A speed-up of int8 or of a pruned model means little against a slow
    float32 path. In eager PyTorch on a CPU the slow parts of a small CNN are
    often not the convolutions: ``max_pool2d`` on a channels-first (NCHW)
    tensor is not vectorized across channels and can take longer than the
    convolution before it, and an unfolded BatchNorm is one more pass over
    the activations. The candidates, timed in interleaved rounds under
    ``torch.inference_mode``, are the model as given, BatchNorm folded into
    the convolutions (:func:`fold_batchnorm`), channels-last memory format
    (4-D inputs only), and both. Engines that need a compiler or another
    runtime (``torch.compile``, ONNX Runtime) are not "plain" and are
    compared separately (section 3.3).

    A module from ``torch.export`` (``ExportedProgram.module()``) cannot be
    switched to eval mode (its mode was fixed when it was exported): it is
    timed as it is, with channels-last as the only other candidate.

    Args:
        model: left unchanged; the candidates are copies in eval mode.
        example_input: a batch as the model will see it (float, or integer
            token ids).
        threads: PyTorch threads for the timing (default 1).
        repeats: interleaved timing rounds of :func:`companion.measure.compare_latency`.

    Returns:
        An :class:`Fp32Baseline`: the winner's name, the model to time and the comparison.
    """
    check_module(model, "model")
    x = _check_input(example_input, "example_input")
    exported = is_exported(model)
    candidates: dict[str, nn.Module] = {"eager": eval_copy(model)}
    if not exported and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for m in model.modules()):
        with contextlib.suppress(ValueError):       # not traceable: no folded candidate
            candidates["BN folded"] = fold_batchnorm(model)
    if x.dim() == 4 and x.is_floating_point():
        for name in list(candidates):
            label = "channels-last" if name == "eager" else f"{name} + channels-last"
            candidates[label] = _copy(candidates[name]).to(memory_format=torch.channels_last)
    cmp = compare_latency(candidates, x, threads=threads, repeats=repeats)
    best = min(cmp.names, key=cmp.median_ms)
    return Fp32Baseline(best, candidates[best], cmp)


def is_exported(model: nn.Module) -> bool:
    """Whether ``model`` came from ``torch.export`` (``ExportedProgram.module()``).

    Such a module runs like any other but refuses ``.train()`` and ``.eval()``
    (``NotImplementedError``): its train/eval behaviour was fixed when it was
    exported, so code that switches modes must leave it alone.

    >>> is_exported(torch.nn.Linear(2, 2))
    False

    Raises:
        TypeError: ``model`` is not a module.
    """
    return _is_exported(check_module(model, "model"))


def _copy(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():   # deep-copying an exported module warns about pytrees
        warnings.simplefilter("ignore", FutureWarning)
        return clone(model)


def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode; the original (and its mode) is untouched.

    A ``torch.export`` module (:func:`is_exported`) is copied as it is: its
    mode cannot be switched and was fixed when it was exported.

    Raises:
        TypeError: ``model`` is not a module.
    """
    copy = _copy(check_module(model, "model"))
    return copy if is_exported(copy) else copy.eval()


# --------------------------------------------------------------------------- engines
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_input(x: Any, name: str = "x") -> torch.Tensor:
    """A batch: floating point, or integer (token ids, say); not bool or complex."""
    x = check_tensor(x, name)
    if not (x.is_floating_point() or x.dtype in _INT_DTYPES):
        raise TypeError(f"{name} must be a floating-point or integer tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension, got shape {tuple(x.shape)}")
    return x


def eager_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``lambda: model(x)`` in eval mode under ``torch.inference_mode``.

    Args:
        model: put in eval mode (the only change made to it; a ``torch.export``
            module, whose mode cannot be switched, is left as it is).
        x: a batch of inputs (float, or integer token ids).

    Returns:
        A zero-argument callable returning the logits.
    """
    check_module(model, "model")
    x = _check_input(x)
    if not is_exported(model):
        model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def compile_model(model: nn.Module, *, dynamic: bool = True,
                  mode: str | None = None) -> nn.Module:
    """A ``torch.compile`` d copy of ``model`` in eval mode (the original is untouched).

    Compilation happens lazily on the first call, which is therefore slow
    (seconds to tens of seconds on a CPU): time it separately from the
    steady-state latency.

    Args:
        model: the model to compile (deep-copied first).
        dynamic: compile once for any batch size (symbolic shapes) instead of
            recompiling for each new batch size.
        mode: ``None`` (default), ``"reduce-overhead"`` or ``"max-autotune"``.

    Raises:
        ValueError: unknown ``mode``.
    """
    check_module(model, "model")
    if mode not in (None, "default", "reduce-overhead", "max-autotune"):
        raise ValueError(f"mode must be None, 'default', 'reduce-overhead' or 'max-autotune', "
                         f"got {mode!r}")
    return torch.compile(eval_copy(model), dynamic=dynamic, mode=mode)
