"""Affine quantization: the math, calibration, int8 models and quantization-aware training.

Tensor level (written out, because the book derives it)::

    scale = (hi - lo) / (qmax - qmin)           zero_point = qmin - round(lo / scale)
    q     = clamp(round(x / scale) + zero_point, qmin, qmax)
    x_hat = (q - zero_point) * scale            |x - x_hat| <= scale / 2 inside [lo, hi]

:func:`quantize` / :func:`dequantize` implement it for 2 to 16 bits, signed
or unsigned codes, symmetric or asymmetric ranges, per tensor or per channel
along any axis. At 8 bits the codes and the dequantized values are
bit-exact with ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel``.

Calibration: observers (:class:`MinMaxObserver`, :class:`MovingAverageMinMaxObserver`,
:class:`PercentileObserver`, :class:`MSEObserver`) choose a range from
data; :func:`calibrate` runs them over a loader on a model's activations.

Model level, in the style of torchao (``quantize_(model, config)``): the
model functions are called :func:`quantize_model_` (in place) and
:func:`quantize_model` (returns a quantized copy, the caller's model is
unchanged) because :func:`quantize` is the tensor function.

* :class:`WeightOnlyConfig`: weights stored as int8 (or packed 4-bit) codes,
  dequantized on the fly: smaller file, float compute, no speed-up.
* :class:`DynamicInt8Config`: ``torch.ao`` dynamic quantization of ``nn.Linear``
  (int8 weights, activations quantized at run time; real int8 kernels).
* :class:`StaticInt8Config`: ``torch.ao`` eager static quantization with the
  x86 (fbgemm) backend: Conv/BN/ReLU fused, activation ranges calibrated
  with an observer of this module; real int8 kernels end to end.
* :class:`QATConfig`: fake quantization with a straight-through estimator
  (:func:`prepare_qat_`), then :func:`convert_qat_` to stored codes. Any
  bit width; below 8 bits the arithmetic is *simulated* in float.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_module,
    check_tensor,
    evaluating,
)
from .train import _check_not_empty, clone

__all__ = [
    "QTensor", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "error_bound", "sqnr", "pack", "unpack",
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
    "MSEObserver", "make_observer", "calibrate",
    "WeightOnlyConfig", "DynamicInt8Config", "StaticInt8Config", "QATConfig",
    "QuantizedWeightLayer", "FakeQuantize", "QATLayer",
    "quantize_model_", "quantize_model", "prepare_qat_", "convert_qat_", "calibrate_fake_quant_",
    "quantizable_layers",
]


# =========================================================================== tensor level
def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of ``bits``-bit codes.

    Args:
        bits: 2 to 16.
        signed: two's complement ``[-2^(b-1), 2^(b-1) - 1]`` or unsigned ``[0, 2^b - 1]``.

    Raises:
        ValueError: ``bits`` outside 2..16.
    """
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def _storage_dtype(bits: int, signed: bool) -> torch.dtype:
    # torch.uint16 exists but lacks most ops: unsigned 16-bit codes go to int32
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed or bits <= 15 else torch.int32


@dataclass
class QTensor:
    """A quantized tensor: integer ``codes`` and the affine map back to floats.

    ``x_hat = (codes - zero_point) * scale``; with ``axis`` set, ``scale`` and
    ``zero_point`` hold one value per slice along that axis.

    Attributes:
        codes: integer tensor of ``shape`` (int8/uint8 up to 8 bits, int16 above; unsigned
            16-bit codes are int32 because ``torch.uint16`` lacks most operations).
        scale: float32, a scalar or one per channel.
        zero_point: int32, same shape as ``scale``.
        bits: bits per code.
        axis: the per-channel axis, or None for one range per tensor.
        shape: shape of the original tensor.
        signed: whether the codes are signed (None: infer from the codes).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    axis: int | None
    shape: tuple[int, ...]
    signed: bool | None = None

    @property
    def is_signed(self) -> bool:
        if self.signed is not None:
            return self.signed
        return bool(self.codes.numel() and self.codes.min() < 0)

    @property
    def nbytes(self) -> int:
        """Bytes of the codes when stored packed (two 4-bit codes per byte, etc.)."""
        packed = pack(self)
        return packed.numel() * packed.element_size()


def _broadcast(t: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    if axis is None:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def _check_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None:
        return None
    axis = check_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim - 1}] for a {ndim}-d tensor, "
                         f"got {axis}")
    return axis % ndim


def _as_range_end(value: torch.Tensor | float, name: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (torch.Tensor, float, int)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def choose_qparams(lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int = 8, *,
                   symmetric: bool = False, signed: bool | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[lo, hi]`` onto the ``bits``-bit grid.

    The range is first widened to contain 0, so that 0 (padding, ReLU
    zeros) is represented exactly. A zero-width range (a constant or
    all-zero tensor) gets scale 1 instead of a division by zero.

    Args:
        lo, hi: range ends (scalars or one per channel).
        bits: 2 to 16.
        symmetric: range ``[-a, a]`` with ``a = max(|lo|, |hi|)``; zero point 0
            for signed codes (the middle of the grid for unsigned).
        signed: signed codes; default: True when symmetric, else False.

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors.
    """
    check_bool(symmetric, "symmetric")
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    lo, hi = (_as_range_end(v, n) for v, n in ((lo, "lo"), (hi, "hi")))
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {tuple(lo.shape)} and "
                         f"{tuple(hi.shape)}")
    if bool((lo > hi).any()):
        raise ValueError("lo must be <= hi")
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2)
    else:
        scale = (hi - lo) / (qmax - qmin)
        if not bool(torch.isfinite(scale).all()):
            # hi - lo overflows float32 (a range near +-3.4e38): the step itself fits
            wide = ((hi.double() - lo.double()) / (qmax - qmin)).float()
            scale = torch.where(torch.isfinite(scale), scale, wide)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = qmin - torch.round(lo / safe)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    zero_point = torch.clamp(zero_point, qmin, qmax).to(torch.int32)
    return scale, zero_point


def _codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
           qmin: int, qmax: int, fused: bool = False) -> torch.Tensor:
    """``clamp(round(x * (1/scale) + zero_point))`` in float32, ties to even.

    This is PyTorch's arithmetic to the last bit: it multiplies by the
    float32 reciprocal of the scale (not divides), and its per-tensor kernel
    adds the zero point in a fused multiply-add (one rounding, emulated here
    in float64) while its per-channel kernel rounds the product first.
    """
    inv = 1.0 / scale
    if fused:
        t = (x.double() * inv.double() + zero_point.double()).float()
    else:
        t = x.float() * inv + zero_point.float()
    return torch.clamp(torch.round(t), qmin, qmax)


def quantize(x: torch.Tensor, bits: int = 8, *, symmetric: bool = False,
             axis: int | None = None, signed: bool | None = None,
             qparams: tuple[torch.Tensor, torch.Tensor] | None = None) -> QTensor:
    """Quantize a float tensor to ``bits``-bit integer codes.

    Args:
        x: a finite, non-empty floating-point tensor.
        bits: 2 to 16.
        symmetric: symmetric range (zero point 0) instead of min/max (affine).
        axis: one range per slice along this axis (per-channel); None: per tensor.
        signed: signed codes; default True when symmetric, else False.
        qparams: a fixed ``(scale, zero_point)`` (e.g. from an observer) instead of
            the range of ``x``; values outside it are clamped. The scale must be
            finite and > 0, the zero point an integer inside the code range
            ``qrange(bits, signed)``; one value each, or one per slice along ``axis``.

    Returns:
        A :class:`QTensor`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, ``qparams`` not a pair of
            numbers/tensors, a flag not a bool.
        ValueError: ``x`` is empty or has NaN/inf, ``bits`` outside 2..16, bad ``axis``,
            bad ``qparams`` values or shapes.
    """
    check_tensor(x, "x", floating=True)
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    axis = _check_axis(axis, x.dim())
    check_bool(symmetric, "symmetric")
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    if qparams is None:
        if axis is None:
            lo, hi = x.min(), x.max()
        else:
            flat = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
            lo, hi = flat.min(1).values, flat.max(1).values
        scale, zero_point = choose_qparams(lo, hi, bits, symmetric=symmetric, signed=signed)
        if not bool(torch.isfinite(scale).all()):  # cannot happen since the float64 fallback
            raise ValueError("x: its range is too wide for a finite float32 scale")
    else:
        channels = None if axis is None else x.shape[axis]
        scale, zero_point = _check_qparams(qparams, qmin, qmax, channels)
    codes = _codes(x.detach(), _broadcast(scale, axis, x.dim()),
                   _broadcast(zero_point, axis, x.dim()), qmin, qmax, fused=axis is None)
    return QTensor(codes.to(_storage_dtype(bits, signed)), scale, zero_point, bits, axis,
                   tuple(x.shape), signed)


def _check_qparams(qparams: object, qmin: int, qmax: int, channels: int | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``qparams`` as ``(float32 scale, int32 zero point)``, or a ValueError/TypeError naming it."""
    if not isinstance(qparams, (tuple, list)) or len(qparams) != 2:
        raise TypeError(f"qparams must be a pair (scale, zero_point), got "
                        f"{type(qparams).__name__}")
    for value, what in zip(qparams, ("scale", "zero point"), strict=True):
        if isinstance(value, bool) or not isinstance(value, (torch.Tensor, int, float)):
            raise TypeError(f"qparams: the {what} must be a number or a tensor, got "
                            f"{type(value).__name__}")
        if isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_complex()):
            raise TypeError(f"qparams: the {what} must be a real tensor, got dtype {value.dtype}")
    scale = torch.as_tensor(qparams[0], dtype=torch.float32)
    zp = torch.as_tensor(qparams[1])
    allowed = (1,) if channels is None else (1, channels)
    for t, what in ((scale, "scale"), (zp, "zero point")):
        if t.numel() not in allowed:
            per = "per tensor" if channels is None else f"along axis ({channels} channels)"
            raise ValueError(f"qparams: the {what} must hold one value, or one per channel "
                             f"{per}; got {t.numel()} values")
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        raise ValueError(f"qparams: the scale must be finite and > 0 (in float32), got "
                         f"{scale.flatten()[:4].tolist()}")
    if zp.is_floating_point():
        if not bool(torch.isfinite(zp).all()) or not bool((zp == torch.round(zp)).all()):
            raise ValueError(f"qparams: the zero point must be an integer, got "
                             f"{zp.flatten()[:4].tolist()}")
    if bool((zp < qmin).any()) or bool((zp > qmax).any()):
        raise ValueError(f"qparams: the zero point must lie in the code range [{qmin}, {qmax}], "
                         f"got values in [{zp.min().item():g}, {zp.max().item():g}]")
    return scale, zp.to(torch.int32)


def dequantize(q: QTensor) -> torch.Tensor:
    """Map codes back to float32: ``(codes - zero_point) * scale``.

    Raises:
        TypeError: ``q`` is not a :class:`QTensor`.
    """
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    ndim = q.codes.dim()
    zp = _broadcast(q.zero_point.to(torch.float32), q.axis, ndim)
    scale = _broadcast(q.scale.to(torch.float32), q.axis, ndim)
    return ((q.codes.to(torch.float32) - zp) * scale).reshape(q.shape)


def fake_quantize(x: torch.Tensor, bits: int = 8, **kwargs) -> torch.Tensor:
    """``dequantize(quantize(x, bits, **kwargs))``: the float values int codes stand for."""
    return dequantize(quantize(x, bits, **kwargs))


def error_bound(q: QTensor) -> torch.Tensor:
    """Largest rounding error inside the range: half a step, ``scale / 2`` (per channel)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    return _broadcast(q.scale / 2, q.axis, len(q.shape))


def sqnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum x^2 / sum (x - x_hat)^2)``.

    Returns ``inf`` when ``x_hat`` equals ``x``. About 6 dB per bit for a
    uniform signal.

    Raises:
        ValueError: the shapes differ.
    """
    check_tensor(x, "x", floating=True)
    check_tensor(x_hat, "x_hat", floating=True)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    noise = (x.double() - x_hat.double()).pow(2).sum().item()
    signal = x.double().pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def pack(q: QTensor) -> torch.Tensor:
    """The codes as stored: uint8 with two codes per byte up to 4 bits, else the code dtype.

    Codes are offset to be non-negative (``codes - qmin``) before packing.
    """
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    if q.bits > 4:
        return q.codes.flatten()
    qmin, _ = qrange(q.bits, q.is_signed)
    u = (q.codes.flatten().to(torch.int16) - qmin).to(torch.uint8)
    if u.numel() % 2:
        u = torch.cat([u, u.new_zeros(1)])
    return u[0::2] | (u[1::2] << 4)


def unpack(packed: torch.Tensor, bits: int, signed: bool, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``numel`` codes, flat, in the code dtype.

    Args:
        packed: what :func:`pack` returned: uint8 up to 4 bits, else integer codes.
        bits: 2 to 16, as packed.
        signed: whether the codes are signed, as packed.
        numel: number of codes to return (at most the number ``packed`` holds).

    Raises:
        TypeError: ``packed`` not a tensor of the right dtype, ``signed`` not a bool.
        ValueError: ``bits`` outside 2..16, ``numel`` < 0 or more than ``packed`` holds.
    """
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    check_bool(signed, "signed")
    check_tensor(packed, "packed", allow_empty=True)
    if bits <= 4 and packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8 for {bits}-bit codes (two per byte), got dtype "
                        f"{packed.dtype}")
    if bits > 4 and (packed.is_floating_point() or packed.is_complex()
                     or packed.dtype == torch.bool):
        raise TypeError(f"packed must hold integer codes for {bits} bits, got dtype "
                        f"{packed.dtype}")
    numel = check_int(numel, "numel", min_value=0)
    capacity = packed.numel() * (2 if bits <= 4 else 1)
    if numel > capacity:
        raise ValueError(f"numel must be <= {capacity} (the codes held by packed), got {numel}")
    if bits > 4:
        return packed.flatten()[:numel]
    qmin, _ = qrange(bits, signed)
    u = torch.stack([packed & 0x0F, packed >> 4], dim=1).flatten()[:numel]
    return (u.to(torch.int16) + qmin).to(_storage_dtype(bits, signed))


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


@torch.no_grad()
def calibrate(model: nn.Module, loader: Iterable, layers: Iterable[str] | None = None, *,
              observer: str | Callable[[], Observer] = "minmax", num_batches: int | None = None,
              inputs: bool = False) -> dict[str, Observer]:
    """Run ``model`` over ``loader`` and observe the outputs (or inputs) of some layers.

    Args:
        model: run in eval mode (mode restored after); not modified.
        loader: yields ``(inputs, labels)`` or inputs.
        layers: names of submodules (``dict(model.named_modules())``); default:
            every Linear/Conv layer.
        observer: a name for :func:`make_observer` or a zero-argument factory.
        num_batches: stop after this many batches (default: all).
        inputs: observe each layer's input instead of its output.

    Returns:
        ``{layer name: observer}``.

    Raises:
        ValueError: an unknown layer name, or no layer to observe.
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

    def hook(name: str):
        def fn(mod, args, out):
            observers[name].update(args[0] if inputs else out)
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    seen = 0
    try:
        with evaluating(model):
            for i, batch in enumerate(loader):
                if num_batches is not None and i >= num_batches:
                    break
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                seen += 1
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("loader yielded no batch: nothing was observed")
    return observers


# =========================================================================== model level
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear / Conv1d / Conv2d layer."""
    check_module(model, "model")
    return [(n, m) for n, m in model.named_modules() if type(m) in _LAYERS]


@dataclass
class WeightOnlyConfig:
    """Weights stored as ``bits``-bit codes (symmetric, per output channel).

    Compute stays float32: the layer dequantizes its weight on each call.
    Smaller file, no speed-up.
    """

    bits: int = 8

    def __post_init__(self) -> None:
        check_int(self.bits, "bits", min_value=2, max_value=8)


@dataclass
class DynamicInt8Config:
    """``torch.ao`` dynamic quantization: int8 weights, activations quantized at run time.

    Only ``nn.Linear`` (and LSTM/GRU) have dynamic int8 kernels; convolutions stay float.
    """


@dataclass
class StaticInt8Config:
    """``torch.ao`` eager static quantization (x86/fbgemm int8 kernels).

    Conv-BN-ReLU and Linear-ReLU are fused; weights are per-channel symmetric
    int8; activation ranges come from an observer of this module run over
    ``calibration`` (uint8, 7-bit range on x86 to avoid overflow in the
    int8 x uint8 multiply-add of CPUs without VNNI).

    Args:
        calibration: a loader of ``(inputs, labels)`` for the activation ranges.
        observer: ``"minmax"``, ``"moving_average"``, ``"percentile"`` or ``"mse"``.
        num_batches: calibration batches.
        backend: PyTorch's quantized engine; must be the active one.
    """

    calibration: Iterable
    observer: str = "minmax"
    num_batches: int = 10
    backend: str = "x86"

    def __post_init__(self) -> None:
        check_choice(self.observer, "observer", tuple(_OBSERVERS))
        check_int(self.num_batches, "num_batches", min_value=1)
        check_choice(self.backend, "backend", tuple(torch.backends.quantized.supported_engines))
        cal = self.calibration
        if isinstance(cal, (str, bytes, torch.Tensor)):
            raise TypeError("calibration must be an iterable of batches (a DataLoader, or a list "
                            f"of (inputs, labels) or input tensors), got {type(cal).__name__}")
        _check_not_empty(cal, "calibration")


@dataclass
class QATConfig:
    """Quantization-aware training: fake-quantized weights and layer inputs.

    Args:
        bits: weight bits (symmetric, per output channel).
        activation_bits: bits of each layer's input (asymmetric, per tensor,
            moving-average range); default ``bits``; None after init means same.
        momentum: of the activation range's moving average.
    """

    bits: int = 8
    activation_bits: int | None = None
    momentum: float = 0.01
    quantize_input: bool = True

    def __post_init__(self) -> None:
        check_bool(self.quantize_input, "quantize_input")
        check_int(self.bits, "bits", min_value=2, max_value=16)
        if self.activation_bits is None:
            self.activation_bits = self.bits
        check_int(self.activation_bits, "activation_bits", min_value=2, max_value=16)
        check_float(self.momentum, "momentum", min_value=0.0, max_value=1.0, min_inclusive=False)


# --------------------------------------------------------------------------- weight-only
class QuantizedWeightLayer(nn.Module):
    """A Linear or Conv layer whose weight is stored as packed integer codes.

    ``forward`` dequantizes the weight and runs the float op (simulated
    integer compute; the saving is storage). A convolution keeps its
    ``padding_mode`` (``"circular"``, ``"reflect"``, ``"replicate"``).

    Args:
        layer: an ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (not modified).
        bits: 2 to 16 (symmetric, per output channel; packed two per byte up to 4 bits).
    """

    def __init__(self, layer: nn.Module, bits: int = 8) -> None:
        super().__init__()
        if type(layer) not in _LAYERS:
            raise TypeError(f"layer must be nn.Linear/Conv1d/Conv2d, got {type(layer).__name__}")
        bits = check_int(bits, "bits", min_value=2, max_value=16)
        q = quantize(layer.weight.detach(), bits, symmetric=True, axis=0)
        self.kind = type(layer).__name__
        self.bits, self.shape = bits, tuple(layer.weight.shape)
        self.conv_args = ({} if self.kind == "Linear" else
                          {"stride": layer.stride, "padding": layer.padding,
                           "dilation": layer.dilation, "groups": layer.groups})
        if self.kind != "Linear" and layer.padding_mode != "zeros":
            # as nn.Conv*d._conv_forward: pad with the mode first, then convolve unpadded
            self.padding_mode = layer.padding_mode
            self.mode_padding = tuple(layer._reversed_padding_repeated_twice)
            self.conv_args["padding"] = 0
        self.register_buffer("codes", pack(q))
        self.register_buffer("scale", q.scale)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        """The dequantized float weight."""
        numel = math.prod(self.shape)
        codes = unpack(self.codes, self.bits, True, numel).reshape(self.shape)
        zero = torch.zeros_like(self.scale, dtype=torch.int32)
        return dequantize(QTensor(codes, self.scale, zero, self.bits, 0, self.shape, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        if self.kind == "Linear":
            return F.linear(x, w, self.bias)
        conv = F.conv1d if self.kind == "Conv1d" else F.conv2d
        mode = getattr(self, "padding_mode", "zeros")
        if mode != "zeros":
            x = F.pad(x, self.mode_padding, mode=mode)
        return conv(x, w, self.bias, **self.conv_args)

    def extra_repr(self) -> str:
        mode = getattr(self, "padding_mode", "zeros")
        extra = "" if mode == "zeros" else f", padding_mode={mode!r}"
        return f"{self.kind}, weight {self.shape}, {self.bits}-bit codes{extra}"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _layers_or_raise(model: nn.Module, kinds: tuple[type, ...] = _LAYERS
                     ) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if type(m) in kinds]
    if not found:
        names = "/".join(k.__name__ for k in kinds)
        raise ValueError(f"model has no quantizable layer ({names})")
    return found


def _weight_only_(model: nn.Module, config: WeightOnlyConfig) -> nn.Module:
    # every replacement is built before the first is swapped in: a failure leaves model as it was
    new = []
    for name, layer in _layers_or_raise(model):
        try:
            new.append((name, QuantizedWeightLayer(layer, config.bits)))
        except ValueError as e:
            raise ValueError(f"model: layer {name!r}: {e}") from e
    for name, layer in new:
        _replace(model, name, layer)
    return model


def _become_(model: nn.Module, new: nn.Module) -> nn.Module:
    """Make ``model`` the module ``new`` (a converted deep copy of it): state, children, mode."""
    model.__dict__.clear()
    model.__dict__.update(new.__dict__)
    return model


# --------------------------------------------------------------------------- dynamic / static
@contextlib.contextmanager
def _quiet_torch_ao():
    """Silence torch.ao's deprecation notices (it still runs on torch 2.13) for one call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        yield


def _dynamic(model: nn.Module, config: DynamicInt8Config) -> nn.Module:
    """A dynamically quantized copy; ``model`` is not touched."""
    from torch.ao.quantization import quantize_dynamic
    _layers_or_raise(model, (nn.Linear, nn.LSTM, nn.GRU))
    with _quiet_torch_ao():
        return quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8,
                                inplace=False)


_FUSIONS = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d),
            (nn.Conv2d, nn.ReLU), (nn.Linear, nn.ReLU), (nn.Conv1d, nn.BatchNorm1d, nn.ReLU),
            (nn.Conv1d, nn.ReLU))


def fusion_groups(model: nn.Sequential) -> list[list[str]]:
    """Consecutive children that eager quantization fuses (Conv-BN-ReLU, Linear-ReLU ...)."""
    children = list(model.named_children())
    groups, i = [], 0
    while i < len(children):
        for pattern in _FUSIONS:
            window = children[i:i + len(pattern)]
            if len(window) == len(pattern) and all(
                    type(m) is t for (_, m), t in zip(window, pattern, strict=True)):
                groups.append([n for n, _ in window])
                i += len(pattern) - 1
                break
        i += 1
    return groups


class _ObserverModule(torch.ao.quantization.ObserverBase):
    """Adapts an :class:`Observer` of this module to ``torch.ao``'s observer interface."""

    def __init__(self, kind: str = "minmax", bits: int = 7) -> None:
        super().__init__(dtype=torch.quint8)
        self.observer = make_observer(kind)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observer.update(x)
        return x

    @torch.jit.export
    def calculate_qparams(self):  # noqa: D102 (torch.ao interface)
        scale, zp = self.observer.qparams(self.bits)
        return scale.reshape(1), zp.reshape(1)


def _static(model: nn.Module, config: StaticInt8Config) -> nn.Module:
    """A statically quantized copy; ``model`` is not touched (a failure leaves it as it was)."""
    import torch.ao.quantization as tq
    if not isinstance(model, nn.Sequential):
        raise TypeError("static int8 (eager mode) needs an nn.Sequential model, "
                        f"got {type(model).__name__}")
    if torch.backends.quantized.engine != config.backend:
        raise ValueError(f"config.backend is {config.backend!r} but PyTorch's quantized engine "
                         f"is {torch.backends.quantized.engine!r}")
    _layers_or_raise(model)
    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    groups = fusion_groups(model)
    if groups:
        with _quiet_torch_ao():
            tq.fuse_modules(model, groups, inplace=True)
    children = list(model.named_children())
    for n, _ in children:
        delattr(model, n)
    model.add_module("quant", tq.QuantStub())
    for n, m in children:
        model.add_module(n, m)
    model.add_module("dequant", tq.DeQuantStub())
    reduce = config.backend in ("x86", "fbgemm")
    activation = _ObserverModule.with_args(kind=config.observer, bits=7 if reduce else 8)
    model.qconfig = tq.QConfig(activation=activation,
                               weight=tq.default_per_channel_weight_observer)
    with _quiet_torch_ao(), torch.no_grad():
        tq.prepare(model, inplace=True)
        seen = 0
        for i, batch in enumerate(config.calibration):
            if i >= config.num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError("config.calibration must yield (inputs, labels) or input "
                                f"tensors, got a batch of {type(x).__name__}")
            model(x)
            seen += 1
        if not seen:
            raise ValueError("config.calibration yielded no batch: the activation ranges "
                             "need at least one")
        tq.convert(model, inplace=True)
    model.train(was_training)
    return model


# --------------------------------------------------------------------------- QAT
class _RoundSTE(torch.autograd.Function):
    """Rounding whose gradient is the identity (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class FakeQuantize(nn.Module):
    """Quantize-dequantize in the forward pass, straight-through gradient in the backward.

    Values inside the range get gradient 1 (rounding is skipped by the
    estimator); values clipped to the range get gradient 0.

    Args:
        bits: 2 to 16.
        symmetric: symmetric (weights) or affine (activations).
        axis: per-channel axis (weights) or None.
        momentum: if set, in (0, 1]: the range is a moving average of batch
            min/max (activations), updated in training mode; else each call uses
            the tensor's own min/max (weights).

    A moving-average quantizer that is run in eval mode before it has seen
    any data in training mode has no range (it would use [0, 0]): it warns
    once (``UserWarning``); call :func:`calibrate_fake_quant_` or train a step
    first.
    """

    def __init__(self, bits: int = 8, *, symmetric: bool = False, axis: int | None = None,
                 momentum: float | None = None) -> None:
        super().__init__()
        self.bits = check_int(bits, "bits", min_value=2, max_value=16)
        check_bool(symmetric, "symmetric")
        if axis is not None:
            axis = check_int(axis, "axis")
        if momentum is not None:
            momentum = check_float(momentum, "momentum", min_value=0.0, max_value=1.0,
                                   min_inclusive=False)
        self.symmetric, self.axis, self.momentum = symmetric, axis, momentum
        self.label = ""  # where it sits in a model, for messages (set by prepare_qat_)
        self._warned = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def _range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.axis is not None:
            flat = x.detach().movedim(self.axis, 0).reshape(x.shape[self.axis], -1)
            return flat.min(1).values, flat.max(1).values
        lo, hi = x.detach().min(), x.detach().max()
        if self.momentum is None:
            return lo, hi
        if self.training:
            if not self.initialized:
                self.lo.copy_(lo), self.hi.copy_(hi), self.initialized.fill_(True)
            else:
                m = self.momentum
                self.lo.mul_(1 - m).add_(m * lo), self.hi.mul_(1 - m).add_(m * hi)
        elif not getattr(self, "_warned", False) and not self.initialized:
            self._warned = True
            label = getattr(self, "label", "")
            where = f" {label!r}" if label else ""
            warnings.warn(f"FakeQuantize{where} runs in eval mode but has no calibrated range "
                          "(it never saw data in training mode), so it uses [0, 0] and its "
                          "outputs are meaningless: call companion.quant.calibrate_fake_quant_"
                          "(model, loader) or run a training step first", UserWarning,
                          stacklevel=2)
        return self.lo, self.hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._range(x)
        signed = self.symmetric
        qmin, qmax = qrange(self.bits, signed)
        scale, zp = choose_qparams(lo, hi, self.bits, symmetric=self.symmetric, signed=signed)
        scale = _broadcast(scale, self.axis, x.dim())
        zp = _broadcast(zp.float(), self.axis, x.dim())
        q = torch.clamp(_RoundSTE.apply(x * (1.0 / scale) + zp), qmin, qmax)
        return (q - zp) * scale

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        return f"bits={self.bits}, {kind}, axis={self.axis}"


class QATLayer(nn.Module):
    """A Linear/Conv layer with fake-quantized weight and (optionally) input."""

    def __init__(self, layer: nn.Module, config: QATConfig) -> None:
        super().__init__()
        if type(layer) not in _LAYERS:
            raise TypeError(f"layer must be nn.Linear/Conv1d/Conv2d, got {type(layer).__name__}")
        self.layer = layer
        self.weight_fq = FakeQuantize(config.bits, symmetric=True, axis=0)
        self.input_fq = (FakeQuantize(config.activation_bits, momentum=config.momentum)
                         if config.quantize_input else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_fq(x)
        w = self.weight_fq(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


def prepare_qat_(model: nn.Module, config: QATConfig) -> nn.Module:
    """Wrap every Linear/Conv layer of ``model`` in a :class:`QATLayer`, in place.

    Train the model as usual afterwards; gradients pass the rounding by the
    straight-through estimator. The input ranges are set by training steps
    or by :func:`calibrate_fake_quant_`; evaluating before either warns.

    Raises:
        ValueError: no Linear/Conv layer.
    """
    check_module(model, "model")
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be a QATConfig, got {type(config).__name__}")
    wrapped = [(name, QATLayer(layer, config)) for name, layer in _layers_or_raise(model)]
    for name, qat in wrapped:
        qat.weight_fq.label = f"{name}.weight_fq"
        if isinstance(qat.input_fq, FakeQuantize):
            qat.input_fq.label = f"{name}.input_fq"
        _replace(model, name, qat)
    return model


@torch.no_grad()
def calibrate_fake_quant_(model: nn.Module, loader: Iterable, num_batches: int = 10) -> nn.Module:
    """Set the activation ranges of a prepared model from data, without training (PTQ).

    Only the :class:`FakeQuantize` modules are put in training mode (so that
    they update their moving-average ranges); BatchNorm statistics and
    weights are left alone.

    Raises:
        ValueError: the model has no QATLayer, or ``loader`` yielded no batch.
    """
    check_module(model, "model")
    num_batches = check_int(num_batches, "num_batches", min_value=1)
    fqs = [m for m in model.modules() if isinstance(m, FakeQuantize) and m.momentum is not None]
    if not fqs:
        raise ValueError("model has no QATLayer: call prepare_qat_ first")
    was_training = model.training
    model.eval()
    for fq in fqs:
        fq.train()
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if i >= num_batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            seen += 1
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError("loader yielded no batch: the activation ranges were not calibrated")
    return model


class _FrozenInput(nn.Module):
    """Fixed-range fake quantization of a layer's input, then the layer (after QAT)."""

    def __init__(self, fq: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.input_fq, self.layer = fq, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.input_fq(x))


def convert_qat_(model: nn.Module) -> nn.Module:
    """Replace each :class:`QATLayer` by stored weight codes and its frozen input range.

    Weights become :class:`QuantizedWeightLayer` (packed codes: the file
    shrinks) at the QAT bit width; inputs keep the learned range. In eval mode
    the converted model computes what the QAT model computed (to float
    rounding). Compute remains simulated.

    Raises:
        ValueError: the model has no QATLayer (call :func:`prepare_qat_` first).
    """
    check_module(model, "model")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, QATLayer)]
    if not found:
        raise ValueError("model has no QATLayer: call prepare_qat_ first")
    stored = [QuantizedWeightLayer(qat.layer, qat.weight_fq.bits) for _, qat in found]
    for (name, qat), layer in zip(found, stored, strict=True):
        qat.input_fq.eval()
        _replace(model, name, _FrozenInput(qat.input_fq, layer))
    return model


# --------------------------------------------------------------------------- entry points
def quantize_model_(model: nn.Module, config: WeightOnlyConfig | DynamicInt8Config |
                    StaticInt8Config | QATConfig) -> nn.Module:
    """Quantize ``model`` in place (torchao's ``quantize_``) and return it.

    Args:
        model: a float model; for :class:`StaticInt8Config` an ``nn.Sequential``.
        config: one of the config dataclasses of this module. A
            :class:`QATConfig` prepares the model for training (see
            :func:`prepare_qat_`).

    The call is atomic: if it fails (a bad calibration loader, a layer it
    cannot quantize), ``model`` is left as it was.

    Raises:
        TypeError: ``model`` is not a module, or an unknown ``config``.
        ValueError: the model has no layer the config can quantize, or the
            calibration data of :class:`StaticInt8Config` yields no batch.
    """
    check_module(model, "model")
    handler, copies = _handler(config)
    return _become_(model, handler(model, config)) if copies else handler(model, config)


def _handler(config: object) -> tuple[Callable[[nn.Module, object], nn.Module], bool]:
    """The function that applies ``config`` and whether it returns a copy (else in place)."""
    handlers = {WeightOnlyConfig: (_weight_only_, False), DynamicInt8Config: (_dynamic, True),
                StaticInt8Config: (_static, True), QATConfig: (prepare_qat_, False)}
    if type(config) not in handlers:
        raise TypeError(f"config must be one of {[c.__name__ for c in handlers]}, "
                        f"got {type(config).__name__}")
    return handlers[type(config)]


def quantize_model(model: nn.Module, config: WeightOnlyConfig | DynamicInt8Config |
                   StaticInt8Config | QATConfig) -> nn.Module:
    """A quantized copy of ``model``; the caller's model is left unchanged.

    See :func:`quantize_model_` for the arguments.
    """
    check_module(model, "model")
    handler, copies = _handler(config)
    return handler(model, config) if copies else handler(clone(model), config)

