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
from .compare import COLUMNS, Variant, compare
from .cpu import ISA_LIMIT_VARIABLES, CPUInfo, cpu_info
from .flops import FlopReport, count_flops
from .latency import (
    LatencyComparison,
    LatencyReport,
    assert_timing,
    compare_latency,
    measure_latency,
)
from .profile import profile_operators
from .size import (
    ParamReport,
    SizeReport,
    bytes_per_value,
    count_parameters,
    serialized_size,
    state_dict_bytes,
)
from .table import Table

__all__ = [
    "Table",
    "SizeReport",
    "ParamReport",
    "FlopReport",
    "LatencyReport",
    "bytes_per_value",
    "serialized_size",
    "state_dict_bytes",
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
    "COLUMNS",
]

own_public_names(globals(), __name__)
