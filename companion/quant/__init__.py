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

The package's files follow the chapter, bottom up: ``affine`` (the tensor-level
math above), ``observers`` (calibration), ``configs`` (the model-level config
dataclasses), ``modules`` (weight-only layers and QAT), ``backends`` (the
``torch.ao`` glue for dynamic and static int8) and ``api`` (:func:`quantize_model_`,
:func:`quantize_model`). Each imports only the files before it; the public names
(``__all__``) are re-exported here, so ``companion.quant.X`` is the one address to
use. Private helpers stay in their files.
"""

from __future__ import annotations

from .._checks import own_public_names
from .affine import (
    QTensor,
    choose_qparams,
    dequantize,
    error_bound,
    fake_quantize,
    pack_bits,
    qrange,
    quantize,
    sqnr,
    unpack_bits,
)
from .api import quantize_model, quantize_model_
from .configs import DynamicInt8Config, PTQConfig, QATConfig, StaticInt8Config, WeightOnlyConfig
from .modules import (
    FakeQuantize,
    QATLayer,
    QuantizedWeightLayer,
    calibrate_fake_quant_,
    convert_qat_,
    prepare_qat_,
)
from .observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    calibrate,
    make_observer,
    quantizable_layers,
)

__all__ = [
    "QTensor", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "error_bound", "sqnr", "pack_bits", "unpack_bits",
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
    "MSEObserver", "make_observer", "calibrate",
    "WeightOnlyConfig", "DynamicInt8Config", "StaticInt8Config", "QATConfig", "PTQConfig",
    "QuantizedWeightLayer", "FakeQuantize", "QATLayer",
    "quantize_model_", "quantize_model", "prepare_qat_", "convert_qat_", "calibrate_fake_quant_",
    "quantizable_layers",
]

own_public_names(globals(), __name__)
