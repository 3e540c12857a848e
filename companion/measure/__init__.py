"""Measure a model: serialized size, parameters, FLOPs, latency, and the comparison table.

Every number here is measured, never estimated from a model's description:

* size is the length in bytes of the serialized artifact (a state dict saved
  with ``torch.save``, a TorchScript or ``torch.export`` archive, a ``.tflite``
  file ...), optionally after gzip;
* latency is the median of repeated timed runs after warm-up, with the thread
  count and device recorded beside it;
* FLOPs are counted by running the model once with hooks on its layers;
* :func:`compare` puts variants of a model side by side (bytes, x smaller,
  latency, x faster, accuracy): the one table behind every such claim.

Accuracy is :func:`companion.train.evaluate`. Each function returns a small
dataclass that prints as a table. The files: ``table``, ``cpu``, ``size``,
``flops``, ``latency`` (on the library's one timing loop), ``profile``,
``compare`` (which scores with ``companion.train``).
"""

from __future__ import annotations

from .._checks import own_public_names

# every name of the former single module, private ones included (hence the noqa: they
# are re-exported for callers, not used here); the public ones are listed in __all__
from .compare import COLUMNS, Variant, compare  # noqa: F401
from .cpu import (  # noqa: F401
    _NO_VNNI_FBGEMM,
    _NO_VNNI_ONEDNN,
    ISA_LIMIT_VARIABLES,
    CPUInfo,
    _cpu_flags,
    _torch_cpu_feature,
    cpu_info,
)
from .flops import (  # noqa: F401
    FlopReport,
    _is_recurrent,
    _quantized_formulas,
    _rnn_macs,
    _sdpa_cpu_formula,
    count_flops,
)
from .latency import (  # noqa: F401
    LatencyComparison,
    LatencyReport,
    _call_inference,
    _quantile,
    assert_timing,
    compare_latency,
    measure_latency,
)
from .profile import (  # noqa: F401
    _silenced_fd,
    profile_operators,
)
from .size import (  # noqa: F401
    ParamReport,
    SizeReport,
    _named_weights,
    _serialize,
    bytes_per_value,
    count_parameters,
    model_size_bytes,
    serialized_size,
)
from .table import (  # noqa: F401
    Table,
    _fmt,
)

__all__ = [
    "Table",
    "SizeReport",
    "ParamReport",
    "FlopReport",
    "LatencyReport",
    "bytes_per_value",
    "serialized_size",
    "model_size_bytes",
    "count_parameters",
    "count_flops",
    "measure_latency",
    "CPUInfo",
    "cpu_info",
    "ISA_LIMIT_VARIABLES",
    "LatencyComparison",
    "compare_latency",
    "assert_timing",
    "profile_operators",
    "Variant",
    "compare",
]

own_public_names(globals(), __name__)
