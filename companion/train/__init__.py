"""Training and evaluation: the library's one training loop and one accuracy function.

* :func:`fit` trains any model in place and returns a :class:`History`; its
  ``batch_loss`` and ``after_step`` hooks, ``precision`` and ``grad_scaler``
  make distillation, early-exit and mixture-of-experts training, mixed
  precision, the LR range test and training curves thin callers of it;
* :func:`evaluate` is the top-1 accuracy of a model, or of any
  ``predict(inputs) -> logits`` function, over a loader;
* :func:`set_seed`, :func:`default_device`, :func:`clone` and
  :func:`cached_training` (train once, reuse the weights) set runs up.

The files follow that order: ``evaluation`` (logits and accuracy), ``loop``
(the training loop, which scores with ``evaluation``), ``setup``.
"""

from __future__ import annotations

from .._checks import own_public_names
from .evaluation import (  # noqa: F401  (private names: the other modules use them)
    OutputFn,
    Predictor,
    _batches,
    _check_not_empty,
    _model_device,
    _no_batch,
    _output_fn,
    evaluate,
    logits_of,
    predict_logits,
)
from .loop import (  # noqa: F401
    PRECISIONS,
    BatchLoss,
    History,
    NonFiniteLossError,
    _default_batch_loss,
    _device_batch,
    _interactive,
    _train_step,
    fit,
    resolve_precision,
)
from .setup import cached_training, clone, default_device, set_seed

__all__ = ["set_seed", "default_device", "History", "NonFiniteLossError", "PRECISIONS",
           "resolve_precision", "fit", "evaluate", "predict_logits", "clone", "logits_of",
           "cached_training"]

own_public_names(globals(), __name__)
