"""Keras 3 / LiteRT counterparts of the book's PyTorch tools.

Importing this package imports TensorFlow (``import companion`` alone never
does). Submodules, loaded on first use:

* ``companion.keras.core``: the Keras MNIST models, training, conversion to
  ``.tflite`` (float, dynamic-range and full-integer) and running a
  ``.tflite`` model with ``ai_edge_litert``'s Interpreter.
* ``companion.keras.prune``: magnitude pruning of Keras 3 models with a
  callback (polynomial or constant sparsity schedules), no layer wrappers.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("core", "prune")
__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'companion.keras' has no attribute {name!r}")
