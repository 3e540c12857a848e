"""Inference engines that run on this machine, measured on the same model and inputs.

Article 002 teaches inference optimization with TensorRT code that calls
functions TensorRT does not have, on a GPU most readers do not own. This
module gives the engines that run on a CPU here, each as a *zero-argument
callable* that :func:`companion.measure.measure_latency` can time:

* eager PyTorch (:func:`eager_runner`);
* ``torch.compile`` with the inductor backend (:func:`compile_model`);
* ONNX export (:func:`export_onnx`) run by ONNX Runtime, in float32 and after
  int8 static quantization with ``onnxruntime.quantization``
  (:func:`quantize_onnx_int8`, :func:`ort_session`, :func:`ort_runner`);

(:func:`companion.measure.compare` puts them side by side: size, latency,
accuracy), and a roofline model (:func:`measure_peak_flops`,
:func:`measure_bandwidth`, :func:`roofline`) that explains why small batches
are latency-bound.
"""

from __future__ import annotations

from .._checks import own_public_names
from .engines import (
    Fp32Baseline,
    compile_model,
    eager_runner,
    eval_copy,
    fastest_fp32,
    fold_batchnorm,
    is_exported,
)
from .onnx_engine import (
    accuracy_of,
    export_onnx,
    ort_predict,
    ort_runner,
    ort_session,
    quantize_onnx_int8,
)
from .roofline_model import (
    Roofline,
    measure_bandwidth,
    measure_peak_flops,
    model_bytes_moved,
    roofline,
)

__all__ = [
    "Fp32Baseline",
    "fold_batchnorm",
    "fastest_fp32",
    "is_exported",
    "eval_copy",
    "Roofline",
    "eager_runner",
    "compile_model",
    "export_onnx",
    "quantize_onnx_int8",
    "ort_session",
    "ort_runner",
    "ort_predict",
    "accuracy_of",
    "measure_peak_flops",
    "measure_bandwidth",
    "roofline",
    "model_bytes_moved",
]

own_public_names(globals(), __name__)
