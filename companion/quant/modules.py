"""Quantized layers: stored weight codes (weight-only) and fake quantization (QAT)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    CALIBRATION_BATCHES,
    check_bool,
    check_callable,
    check_float,
    check_int,
    check_module,
    run_calibration,
)
from .affine import (
    QTensor,
    _broadcast,
    _codes_from_stored,
    _stored_codes,
    choose_qparams,
    dequantize,
    qrange,
    quantize,
)
from .configs import QATConfig, WeightOnlyConfig
from .observers import _LAYERS


# --------------------------------------------------------------------------- weight-only
class QuantizedWeightLayer(nn.Module):
    """A Linear or Conv layer whose weight is stored as packed integer codes.

    The one quantized layer of the library: :func:`quantize_model_` with a
    :class:`WeightOnlyConfig`, :func:`convert_qat_` and
    :func:`companion.lm_quant.quantize_lm` all build it. Buffers: ``codes``
    (packed densely at their bit width, :func:`pack_bits`; wider than 8 bits,
    one int16/int32 each), ``scale`` (its dtype as quantized: float32, or fp16
    for a language model), ``zero_point`` (packed like the codes; ``None``
    when every zero point is 0, as for symmetric codes) and the float ``bias``.
    ``forward`` dequantizes the weight and runs the float op (simulated
    integer compute; the saving is storage). A convolution keeps its
    ``padding_mode`` (``"circular"``, ``"reflect"``, ``"replicate"``).

    Args:
        layer: an ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (not modified).
        bits: 2 to 16, for the default quantization: symmetric, per output
            channel. Ignored when ``weight`` is given.
        weight: the layer's weight already quantized (any block size or axis,
            e.g. group-wise codes from GPTQ or AWQ); default:
            ``quantize(layer.weight, bits, symmetric=True, axis=0)``.

    Raises:
        TypeError: ``layer`` of another type, ``weight`` not a QTensor.
        ValueError: ``weight`` of another shape than the layer's weight.
    """

    def __init__(self, layer: nn.Module, bits: int = 8, *, weight: QTensor | None = None
                 ) -> None:
        super().__init__()
        if type(layer) not in _LAYERS:
            raise TypeError(f"layer must be nn.Linear/Conv1d/Conv2d, got {type(layer).__name__}")
        if weight is None:
            bits = check_int(bits, "bits", min_value=2, max_value=16)
            weight = quantize(layer.weight.detach(), bits, symmetric=True, axis=0)
        elif not isinstance(weight, QTensor):
            raise TypeError(f"weight must be a QTensor, got {type(weight).__name__}")
        if tuple(weight.shape) != tuple(layer.weight.shape):
            raise ValueError(f"weight has shape {tuple(weight.shape)}, the layer's weight "
                             f"{tuple(layer.weight.shape)}")
        self.kind = type(layer).__name__
        self.bits, self.shape = weight.bits, tuple(weight.shape)
        self.signed, self.axis, self.block_size = weight.is_signed, weight.axis, weight.block_size
        if self.kind == "Linear":
            self.out_features, self.in_features = self.shape
        self.conv_args = ({} if self.kind == "Linear" else
                          {"stride": layer.stride, "padding": layer.padding,
                           "dilation": layer.dilation, "groups": layer.groups})
        if self.kind != "Linear" and layer.padding_mode != "zeros":
            # as nn.Conv*d._conv_forward: pad with the mode first, then convolve unpadded
            self.padding_mode = layer.padding_mode
            self.mode_padding = tuple(layer._reversed_padding_repeated_twice)
            self.conv_args["padding"] = 0
        self.register_buffer("codes", _stored_codes(weight))
        self.register_buffer("scale", weight.scale.detach().clone())
        zp = weight.zero_point
        self.zero_shape = tuple(zp.shape)
        self.register_buffer("zero_point", None if not bool(zp.any()) else _stored_codes(
            QTensor(zp, zp, zp, self.bits, None, tuple(zp.shape), self.signed)))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())

    def qtensor(self) -> QTensor:
        """The stored weight, unpacked: codes, scales and zero points."""
        codes = _codes_from_stored(self.codes, self.bits, self.signed, self.shape)
        if self.zero_point is None:
            zp = torch.zeros(self.zero_shape, dtype=torch.int32)
        else:
            zp = _codes_from_stored(self.zero_point, self.bits, self.signed,
                                    self.zero_shape).to(torch.int32)
        return QTensor(codes, self.scale, zp, self.bits, self.axis, self.shape, self.signed,
                       self.block_size)

    def weight(self) -> torch.Tensor:
        """The dequantized float32 weight."""
        return dequantize(self.qtensor())

    def bits_per_weight(self) -> float:
        """Stored bits per weight: codes, scales and zero points (not the bias)."""
        stored = sum(t.nbytes for t in (self.codes, self.scale, self.zero_point)
                     if t is not None)
        return 8 * stored / math.prod(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight().to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.kind == "Linear":
            return F.linear(x, w, bias)
        conv = F.conv1d if self.kind == "Conv1d" else F.conv2d
        mode = getattr(self, "padding_mode", "zeros")
        if mode != "zeros":
            x = F.pad(x, self.mode_padding, mode=mode)
        return conv(x, w, bias, **self.conv_args)

    def extra_repr(self) -> str:
        mode = getattr(self, "padding_mode", "zeros")
        extra = "" if mode == "zeros" else f", padding_mode={mode!r}"
        grain = (f", block_size={self.block_size}" if self.block_size is not None
                 else "" if self.axis is None else f", axis={self.axis}")
        return f"{self.kind}, weight {self.shape}, {self.bits}-bit codes{grain}{extra}"


FilterFn = Callable[[nn.Module, str], bool]


def _layers_or_raise(model: nn.Module, kinds: tuple[type, ...] = _LAYERS,
                     filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """The layers of ``kinds`` that ``filter_fn(module, fqn)`` selects (default: all)."""
    found = [(n, m) for n, m in model.named_modules()
             if type(m) in kinds and (filter_fn is None or filter_fn(m, n))]
    if not found:
        names = "/".join(k.__name__ for k in kinds)
        chosen = " that filter_fn selects" if filter_fn is not None else ""
        raise ValueError(f"model has no quantizable layer ({names}){chosen}")
    return found


def _weight_only_(model: nn.Module, config: WeightOnlyConfig,
                  filter_fn: FilterFn | None = None) -> nn.Module:
    # every replacement is built before the first is swapped in: a failure leaves model as it was
    new = []
    for name, layer in _layers_or_raise(model, filter_fn=filter_fn):
        try:
            new.append((name, QuantizedWeightLayer(layer, config.bits)))
        except ValueError as e:
            raise ValueError(f"model: layer {name!r}: {e}") from e
    for name, layer in new:
        model.set_submodule(name, layer)
    return model


def _become_(model: nn.Module, new: nn.Module) -> nn.Module:
    """Make ``model`` the module ``new`` (a converted deep copy of it): state, children, mode."""
    model.__dict__.clear()
    model.__dict__.update(new.__dict__)
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
                          "(model, calibration) or run a training step first", UserWarning,
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


def prepare_qat_(model: nn.Module, config: QATConfig, *,
                 filter_fn: FilterFn | None = None) -> nn.Module:
    """Wrap every Linear/Conv layer of ``model`` (those ``filter_fn(module, fqn)``
    selects) in a :class:`QATLayer`, in place.

    Train the model as usual afterwards; gradients pass the rounding by the
    straight-through estimator. The input ranges are set by training steps
    or by :func:`calibrate_fake_quant_`; evaluating before either warns.

    Raises:
        ValueError: no Linear/Conv layer (that ``filter_fn`` selects).
    """
    check_module(model, "model")
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be a QATConfig, got {type(config).__name__}")
    check_callable(filter_fn, "filter_fn", optional=True)
    wrapped = [(name, QATLayer(layer, config))
               for name, layer in _layers_or_raise(model, filter_fn=filter_fn)]
    for name, qat in wrapped:
        qat.weight_fq.label = f"{name}.weight_fq"
        if isinstance(qat.input_fq, FakeQuantize):
            qat.input_fq.label = f"{name}.input_fq"
        model.set_submodule(name, qat)
    return model


@torch.no_grad()
def calibrate_fake_quant_(model: nn.Module, calibration: Iterable,
                          num_batches: int = CALIBRATION_BATCHES) -> nn.Module:
    """Set the activation ranges of a prepared model from data, without training (PTQ).

    Only the :class:`FakeQuantize` modules are put in training mode (so that
    they update their moving-average ranges); BatchNorm statistics and
    weights are left alone.

    Args:
        model: prepared by :func:`prepare_qat_`; changed in place and returned.
        calibration: yields ``(inputs, labels)`` or inputs.
        num_batches: batches to run (default ``companion._checks.CALIBRATION_BATCHES``).

    Raises:
        TypeError: ``calibration`` not an iterable of batches.
        ValueError: the model has no QATLayer, or ``calibration`` yielded no batch.
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
    try:
        run_calibration(model, calibration, num_batches)
    finally:
        model.train(was_training)
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
        model.set_submodule(name, _FrozenInput(qat.input_fq, layer))
    return model
