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
from .evaluation import OutputFn, Predictor, evaluate, logits_of, predict_logits
from .loop import PRECISIONS, BatchLoss, History, NonFiniteLossError, fit, resolve_precision
from .setup import cached_training, clone, default_device, set_seed

__all__ = ["set_seed", "default_device", "History", "NonFiniteLossError", "PRECISIONS",
           "resolve_precision", "fit", "evaluate", "predict_logits", "clone", "logits_of",
           "cached_training", "OutputFn", "Predictor", "BatchLoss"]

own_public_names(globals(), __name__)
