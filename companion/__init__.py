"""companion: the library that goes with the book *Cheaper Neural Networks*.

Each technique lives in its own module, imported on first use so that
``import companion`` stays light and never imports TensorFlow:

============================  ========================================================
``companion.data``            MNIST / Fashion-MNIST offline, loaders, toy data
``companion.models``          LeNet-300-100, LeNet-5, a small CNN
``companion.train``           seeding, device choice, ``fit`` with progress bars
``companion.reference``       the book's trained reference models, cached
``companion.measure``         size, parameters, FLOPs, latency, accuracy
``companion.plot``            the figure helpers the chapters share
``companion.page``            numbers glued into the prose, cells that need x86
``companion.quant``           affine quantization, calibration, int8 models, QAT
``companion.pt2e``            static int8 for any exportable model (torchao PT2E)
``companion.prune``           masks, schedules, structured (channel) pruning
``companion.sparse``          sparse, quantized, entropy-coded storage of weights
``companion.distill``         knowledge distillation (Hinton et al. 2015)
``companion.lr``              learning-rate range test, schedules, seed sweeps
``companion.optim``           optimizers written from their update formulas
``companion.architectures``   small RNN / Transformer classifiers (chapter 4)
``companion.infer``           inference engines: torch.compile, ONNX Runtime, roofline
``companion.amp``             mixed-precision training steps
``companion.dynamic``         early-exit networks, mixture of experts, layer skipping
``companion.parallel``        data, fully sharded (FSDP2) and pipeline parallelism
``companion.lm``              a small byte-level GPT trained on the stdlib's source
``companion.lm_calibrate``    block-by-block calibration inputs (GPTQ, AWQ, Wanda)
``companion.lm_quant``        group-wise weights at 2-8 bits: RTN, GPTQ, AWQ, SmoothQuant
``companion.lm_prune``        magnitude and Wanda pruning, unstructured and 2:4
``companion.llm``             SmolLM2-135M offline, its evaluation text, CPU int4/int8
                              kernels, decoding speed against the memory roofline
``companion.lm_tune``         LoRA, distillation of an LM, training-memory budget
``companion.apps``            small application stand-ins
``companion.report``          all techniques on your own model (``companion report``)
``companion.keras``           Keras / LiteRT counterparts (imports TensorFlow)
============================  ========================================================
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "data",
    "models",
    "train",
    "reference",
    "measure",
    "plot",
    "page",
    "quant",
    "pt2e",
    "prune",
    "sparse",
    "architectures",
    "distill",
    "lr",
    "optim",
    "regularize",
    "infer",
    "amp",
    "dynamic",
    "parallel",
    "lm",
    "lm_calibrate",
    "lm_quant",
    "lm_prune",
    "lm_tune",
    "llm",
    "apps",
    "keras",
    "report",
    "cli",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'companion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
