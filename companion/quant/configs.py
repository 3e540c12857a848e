"""The model-level configs, one dataclass per way of quantizing a model (torchao style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import CALIBRATION_BATCHES, check_bool, check_choice, check_float, check_int
from .observers import _OBSERVERS


# =========================================================================== model level
@dataclass(frozen=True)
class WeightOnlyConfig:
    """Weights stored as ``bits``-bit codes (symmetric, per output channel).

    Compute stays float32: the layer dequantizes its weight on each call.
    Smaller file, no speed-up.
    """

    bits: int = 8

    def __post_init__(self) -> None:
        check_int(self.bits, "bits", min_value=2, max_value=8)


@dataclass(frozen=True)
class DynamicInt8Config:
    """``torch.ao`` dynamic quantization: int8 weights, activations quantized at run time.

    Only ``nn.Linear`` (and LSTM/GRU) have dynamic int8 kernels; convolutions stay float.
    """


@dataclass(frozen=True)
class StaticInt8Config:
    """``torch.ao`` eager static quantization (x86/fbgemm int8 kernels).

    Conv-BN-ReLU and Linear-ReLU are fused; weights are per-channel symmetric
    int8; activation ranges come from an observer of this module run over
    the ``calibration`` batches given to :func:`quantize_model` (uint8, 7-bit
    range on x86 to avoid overflow in the int8 x uint8 multiply-add of CPUs
    without VNNI). The config holds no data: the same config serves any model.

    Args:
        observer: ``"minmax"``, ``"moving_average"``, ``"percentile"`` or ``"mse"``.
        num_batches: calibration batches (default ``companion._checks.CALIBRATION_BATCHES``).
        backend: PyTorch's quantized engine; must be the active one.
    """

    observer: str = "minmax"
    num_batches: int = CALIBRATION_BATCHES
    backend: str = "x86"

    def __post_init__(self) -> None:
        check_choice(self.observer, "observer", tuple(_OBSERVERS))
        check_int(self.num_batches, "num_batches", min_value=1)
        check_choice(self.backend, "backend", tuple(torch.backends.quantized.supported_engines))


@dataclass(frozen=True)
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
            object.__setattr__(self, "activation_bits", self.bits)   # frozen: set once here
        check_int(self.activation_bits, "activation_bits", min_value=2, max_value=16)
        check_float(self.momentum, "momentum", min_value=0.0, max_value=1.0, min_inclusive=False)


@dataclass(frozen=True)
class PTQConfig:
    """Post-training quantization, simulated: fake-quantized weights and layer inputs
    whose ranges come from ``calibration`` batches, with no training.

    The model is prepared as for :class:`QATConfig` and its input ranges are
    set from ``num_batches`` calibration batches (the range of the last one,
    as a moving average with momentum 1); the arithmetic stays float32
    (:func:`convert_qat_` freezes it). Use it for any bit width from 2 to 16;
    for real int8 kernels use :class:`StaticInt8Config` or :mod:`companion.pt2e`.

    Args:
        bits: weight bits (symmetric, per output channel).
        activation_bits: bits of each layer's input; default ``bits``.
        num_batches: calibration batches (default ``companion._checks.CALIBRATION_BATCHES``).
        quantize_input: fake-quantize each layer's input too.
    """

    bits: int = 8
    activation_bits: int | None = None
    num_batches: int = CALIBRATION_BATCHES
    quantize_input: bool = True

    def __post_init__(self) -> None:
        check_int(self.num_batches, "num_batches", min_value=1)
        object.__setattr__(self, "activation_bits", self.qat().activation_bits)

    def qat(self) -> QATConfig:
        """The :class:`QATConfig` this calibration fills in (momentum 1: the last batch)."""
        return QATConfig(self.bits, self.activation_bits, momentum=1.0,
                         quantize_input=self.quantize_input)
