"""Calibration: observers that choose a range from data, run over a model's layers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .._checks import (
    CALIBRATION_BATCHES,
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_module,
    check_tensor,
    evaluating,
    run_calibration,
)
from .affine import _codes, choose_qparams, qrange


# =========================================================================== observers
class Observer:
    """Watches tensors and proposes a clipping range ``(lo, hi)``.

    Subclasses implement :meth:`update` and :meth:`range`; :meth:`qparams`
    turns the range into a scale and zero point.
    """

    name = "observer"

    def update(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        raise NotImplementedError

    def qparams(self, bits: int = 8, *, symmetric: bool = False,
                signed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of the observed range (see :func:`choose_qparams`)."""
        lo, hi = self.range()
        return choose_qparams(lo, hi, bits, symmetric=symmetric, signed=signed)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        return check_tensor(x, "x", floating=True).detach().float()

    def _need_data(self, seen: bool) -> None:
        if not seen:
            raise ValueError(f"{type(self).__name__} has seen no data: call update() first")


class MinMaxObserver(Observer):
    """The smallest and largest value ever seen."""

    name = "min/max"

    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf

    def update(self, x: torch.Tensor) -> None:
        x = self._check(x)
        self.lo, self.hi = min(self.lo, x.min().item()), max(self.hi, x.max().item())

    def range(self) -> tuple[float, float]:
        self._need_data(self.lo <= self.hi)
        return self.lo, self.hi


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min and max (used during QAT).

    Args:
        momentum: weight of the new batch, in (0, 1].
    """

    name = "moving-average min/max"

    def __init__(self, momentum: float = 0.01) -> None:
        self.momentum = check_float(momentum, "momentum", min_value=0.0, max_value=1.0,
                                    min_inclusive=False)
        self.lo = self.hi = None

    def update(self, x: torch.Tensor) -> None:
        x = self._check(x)
        lo, hi = x.min().item(), x.max().item()
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            m = self.momentum
            self.lo, self.hi = (1 - m) * self.lo + m * lo, (1 - m) * self.hi + m * hi

    def range(self) -> tuple[float, float]:
        self._need_data(self.lo is not None)
        return self.lo, self.hi


class _SampleObserver(Observer):
    """Keeps a bounded, evenly strided sample of the values it sees."""

    def __init__(self, max_samples: int = 1_000_000) -> None:
        self.max_samples = check_int(max_samples, "max_samples", min_value=1)
        self.samples: list[torch.Tensor] = []
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        x = self._check(x).flatten()
        stride = max(1, x.numel() * (len(self.samples) + 1) // self.max_samples)
        self.samples.append(x[::stride].clone())
        self.count += x.numel()

    def values(self) -> torch.Tensor:
        self._need_data(bool(self.samples))
        return torch.cat(self.samples)


class PercentileObserver(_SampleObserver):
    """Clips at the ``percentile`` and ``100 - percentile`` percentiles of the values.

    Args:
        percentile: e.g. 99.99: the top 0.01% are clipped.
        max_samples: values kept for the estimate.
    """

    def __init__(self, percentile: float = 99.99, max_samples: int = 1_000_000) -> None:
        super().__init__(max_samples)
        self.percentile = check_float(percentile, "percentile", min_value=50.0,
                                      max_value=100.0)
        self.name = f"percentile {self.percentile:g}"

    def range(self) -> tuple[float, float]:
        v = self.values()
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=torch.float64)
        lo, hi = torch.quantile(v.double(), q).tolist()
        return lo, hi


class MSEObserver(_SampleObserver):
    """The range whose quantize-dequantize error (mean squared) is smallest.

    Searches ``hi' = t * hi`` and ``lo' = t * lo`` for ``t`` on a grid in
    (0, 1]: a narrower range rounds finer but clips more.

    Args:
        bits: the bit width the range is chosen for.
        grid: number of candidate ranges.
        max_samples: values kept for the search.
    """

    name = "MSE-optimal"

    def __init__(self, bits: int = 8, grid: int = 100, max_samples: int = 200_000) -> None:
        super().__init__(max_samples)
        self.bits = check_int(bits, "bits", min_value=2, max_value=16)
        self.grid = check_int(grid, "grid", min_value=1)

    def range(self) -> tuple[float, float]:
        v = self.values()
        lo, hi = v.min().item(), v.max().item()
        qmin, qmax = qrange(self.bits, False)
        best, best_err = (lo, hi), math.inf
        for i in range(1, self.grid + 1):
            t = i / self.grid
            scale, zp = choose_qparams(t * lo, t * hi, self.bits)
            x_hat = (_codes(v, scale, zp, qmin, qmax) - zp) * scale
            err = (v - x_hat).pow(2).mean().item()
            if err < best_err:
                best, best_err = (t * lo, t * hi), err
        return best


_OBSERVERS: dict[str, Callable[..., Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(kind: str, **kwargs) -> Observer:
    """An observer by name: ``"minmax"``, ``"moving_average"``, ``"percentile"`` or ``"mse"``."""
    check_choice(kind, "kind", tuple(_OBSERVERS))
    return _OBSERVERS[kind](**kwargs)


@contextlib.contextmanager
def _layer_hooks(modules: Mapping[str, nn.Module], record: Callable[[str, torch.Tensor], None],
                 *, inputs: bool = True) -> Iterator[None]:
    """While inside, call ``record(name, tensor)`` with the input (the first positional
    argument) or the output of every module of ``modules`` on each of its calls.

    The one hook collector of layer inputs: :func:`calibrate` feeds observers
    with it, :func:`companion.lm_calibrate.block_inputs` the rows GPTQ, AWQ
    and Wanda see. The hooks are removed on exit, also on an error.
    """
    def hook(name: str) -> Callable:
        if inputs:
            return lambda _m, args: record(name, args[0])
        return lambda _m, _args, out: record(name, out)

    handles = [(m.register_forward_pre_hook if inputs else m.register_forward_hook)(hook(n))
               for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: nn.Module, calibration: Iterable, layers: Iterable[str] | None = None, *,
              observer: str | Callable[[], Observer] = "minmax",
              num_batches: int | None = CALIBRATION_BATCHES,
              inputs: bool = False) -> dict[str, Observer]:
    """Run ``model`` over ``calibration`` and observe the outputs (or inputs) of some layers.

    Args:
        model: run in eval mode (mode restored after); not modified.
        calibration: yields ``(inputs, labels)`` or inputs.
        layers: names of submodules (``dict(model.named_modules())``); default:
            every Linear/Conv layer.
        observer: a name for :func:`make_observer` or a zero-argument factory.
        num_batches: stop after this many batches (default
            ``companion._checks.CALIBRATION_BATCHES``, 8; None: all).
        inputs: observe each layer's input instead of its output.

    Returns:
        ``{layer name: observer}``.

    Raises:
        TypeError: ``calibration`` not an iterable of batches.
        ValueError: an unknown layer name, no layer to observe, or ``calibration``
            yielded no batch.
    """
    check_module(model, "model")
    if num_batches is not None:
        num_batches = check_int(num_batches, "num_batches", min_value=1)
    check_bool(inputs, "inputs")
    if not isinstance(observer, str):
        check_callable(observer, "observer")
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else [n for n, _ in quantizable_layers(model)]
    if not names:
        raise ValueError("model has no Linear/Conv layer to observe; pass layers=")
    for n in names:
        if n not in modules:
            raise ValueError(f"layers: no submodule named {n!r}")
    factory = (lambda: make_observer(observer)) if isinstance(observer, str) else observer
    observers = {n: factory() for n in names}
    with _layer_hooks({n: modules[n] for n in names},
                      lambda n, x: observers[n].update(x), inputs=inputs), evaluating(model):
        run_calibration(model, calibration, num_batches)
    return observers


# --------------------------------------------------------------------------- layers
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear / Conv1d / Conv2d layer."""
    check_module(model, "model")
    return [(n, m) for n, m in model.named_modules() if type(m) in _LAYERS]
