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
:func:`quantize_model`). Each imports only the files before it; every name is
re-exported here, so ``companion.quant.X`` is the one address to use.
"""

from __future__ import annotations

from .._checks import own_public_names

# every name of the former single module, private ones included (hence the noqa: they
# are re-exported for callers, not used here); the public ones are listed in __all__
from .affine import (  # noqa: F401
    QTensor,
    _as_range_end,
    _broadcast,
    _check_axis,
    _check_qparams,
    _codes,
    _storage_dtype,
    choose_qparams,
    dequantize,
    error_bound,
    fake_quantize,
    pack,
    qrange,
    quantize,
    sqnr,
    unpack,
)
from .api import (  # noqa: F401
    _handler,
    quantize_model,
    quantize_model_,
)
from .backends import (  # noqa: F401
    _FUSIONS,
    _dynamic,
    _ObserverModule,
    _quiet_torch_ao,
    _static,
    fusion_groups,
)
from .configs import (  # noqa: F401
    DynamicInt8Config,
    PTQConfig,
    QATConfig,
    StaticInt8Config,
    WeightOnlyConfig,
)
from .modules import (  # noqa: F401
    FakeQuantize,
    QATLayer,
    QuantizedWeightLayer,
    _become_,
    _FrozenInput,
    _layers_or_raise,
    _replace,
    _RoundSTE,
    _weight_only_,
    calibrate_fake_quant_,
    convert_qat_,
    prepare_qat_,
)
from .observers import (  # noqa: F401
    _LAYERS,
    _OBSERVERS,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    _SampleObserver,
    calibrate,
    make_observer,
    quantizable_layers,
)

__all__ = [
    "QTensor", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize",
    "error_bound", "sqnr", "pack", "unpack",
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
    "MSEObserver", "make_observer", "calibrate",
    "WeightOnlyConfig", "DynamicInt8Config", "StaticInt8Config", "QATConfig", "PTQConfig",
    "QuantizedWeightLayer", "FakeQuantize", "QATLayer",
    "quantize_model_", "quantize_model", "prepare_qat_", "convert_qat_", "calibrate_fake_quant_",
    "quantizable_layers",
]

own_public_names(globals(), __name__)
