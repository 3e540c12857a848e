"""Magnitude pruning of Keras 3 models, with a callback instead of layer wrappers.

TensorFlow Model Optimization (TF-MOT) prunes by wrapping each layer
(``prune_low_magnitude``) and needs ``strip_pruning`` before export; its
0.8 release is written for Keras 2 (``tf_keras``) and does not accept
Keras 3 models. This module does the same job for Keras 3, in the spirit of
TF-MOT's API, without wrappers:

* :class:`MagnitudePruning` is a ``keras.callbacks.Callback``: at the steps its
  schedule names it computes, for every pruned layer, a binary mask that
  zeroes exactly ``round(s * n)`` of the ``n`` kernel entries with the smallest
  magnitudes (biases are never pruned), and after every training batch it
  multiplies the kernels by their masks again, so pruned weights stay exactly
  zero through the optimizer's updates.
* The schedules are the framework-free objects of :mod:`companion.prune`
  (re-exported here): :class:`PolynomialDecay` (Zhu & Gupta 2017, TF-MOT's
  ``PolynomialDecay``) and :class:`ConstantSparsity` (one-shot).
* :func:`kernel_sparsity` reports the exact zeros of each kernel and in total.
* :func:`magnitude_prune` prunes a *copy* of a model once, to one sparsity.

**Export needs no extra step.** Because no layer is wrapped, the pruned model
*is* the original model (same class, same layers) with zeros in its kernels:
pass it straight to :func:`companion.keras.core.convert_to_tflite` or
``model.save``; there is nothing to strip. The zeros are a *simulation* of a
smaller model: a dense file stores them as 4-byte floats and a dense kernel
multiplies by them as fast as by any other number. They only save bytes when
the file is compressed (gzip) or stored sparsely.

Importing this module imports TensorFlow (and, for the shared schedules and
mask rule, PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import torch

from ..measure import Table
from ..prune import (
    ConstantSparsity,
    PolynomialDecay,
    Schedule,
    check_sparsity,
    mask_from_scores,
)
from ..prune.schedules import _check_schedule

__all__ = ["PRUNABLE", "ConstantSparsity", "PolynomialDecay", "prunable_layers",
           "MagnitudePruning", "LayerSparsity", "SparsityReport", "kernel_sparsity",
           "magnitude_prune"]

#: Layer types whose ``kernel`` is pruned (their biases never are).
PRUNABLE: tuple[type, ...] = (
    keras.layers.Dense, keras.layers.EinsumDense,
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
)

# --------------------------------------------------------------------------- layers
def _check_model(model: Any) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("model must be built (give it an Input, or call it once) before "
                         "its kernels can be pruned")
    return model


def _walk(layers: Iterable[keras.layers.Layer]) -> Iterable[keras.layers.Layer]:
    for layer in layers:
        yield layer
        if isinstance(layer, keras.Model):  # nested Sequential / functional models
            yield from _walk(layer.layers)


def _check_names(layers: Any) -> list[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise TypeError(f"layers must be a sequence of layer names (or None), "
                        f"got {type(layers).__name__}")
    names = list(layers)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers must contain layer names (str), got "
                            f"{type(name).__name__}")
    if not names:
        raise ValueError("layers must name at least one layer (or be None for all)")
    return names


def prunable_layers(model: keras.Model,
                    layers: Sequence[str] | None = None) -> list[keras.layers.Layer]:
    """The layers whose kernels are pruned: Dense/EinsumDense/Conv of ``model``.

    Nested models are searched too. The model is not modified.

    Args:
        model: a built Keras model.
        layers: names of the layers to prune; default (``None``): every
            Dense/Conv layer, the output layer included (as TF-MOT does).

    Raises:
        TypeError: ``model`` is not a Keras model, ``layers`` is not a sequence of str.
        ValueError: an unbuilt model, a model without a Dense/Conv layer, a
            name that no layer has, or a name of a layer without a prunable kernel.
    """
    _check_model(model)
    names = _check_names(layers)
    every = list(_walk(model.layers))
    found = [layer for layer in every if isinstance(layer, PRUNABLE)]
    if not found:
        kinds = sorted({type(layer).__name__ for layer in every})
        raise ValueError(f"model has no prunable layer (Dense, EinsumDense or Conv with a "
                         f"kernel); its layers are {kinds}")
    if names is None:
        return found
    by_name = {layer.name: layer for layer in every}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"layers: no layer named {unknown} in the model; prunable layers are "
                         f"{[layer.name for layer in found]}")
    wrong = [n for n in names if not isinstance(by_name[n], PRUNABLE)]
    if wrong:
        raise ValueError(f"layers: {wrong} have no prunable kernel; prunable layers are "
                         f"{[layer.name for layer in found]}")
    return [by_name[n] for n in dict.fromkeys(names)]


def _magnitude_mask(kernel: np.ndarray, sparsity: float,
                    previous: np.ndarray | None = None) -> np.ndarray:
    """0/1 mask (float32, kernel's shape) zeroing exactly ``round(sparsity * n)`` entries.

    The smallest ``|w|`` go first, ties broken by position
    (:func:`companion.prune.mask_from_scores`); entries already masked by
    ``previous`` stay masked, so sparsity only grows.
    """
    scores = np.abs(np.asarray(kernel, dtype=np.float32))
    if previous is not None:
        scores = np.where(previous == 0, np.float32(-1.0), scores)
    return mask_from_scores(torch.from_numpy(scores), sparsity).numpy()


# --------------------------------------------------------------------------- callback
class MagnitudePruning(keras.callbacks.Callback):
    """Prune the kernels of the model being trained to ``schedule(step)``, in place.

    Pass it to ``model.fit(..., callbacks=[MagnitudePruning(schedule)])``.
    During ``fit`` it **modifies the model in place**: that is its purpose.
    Constructing it touches no model.

    *Steps* are optimizer steps taken while this callback was attached,
    counted from 0 at the start of its first ``fit`` and continued by later
    ``fit`` calls with the same callback (read from ``optimizer.iterations``, so
    ``steps_per_execution > 1`` is handled). At every step ``t`` with
    ``schedule.should_prune(t)`` (``ConstantSparsity``: ``t = begin_step``, also
    before the first batch when that is 0; ``PolynomialDecay``: every
    ``frequency`` steps from ``begin_step`` and at ``end_step``) each layer's
    mask is recomputed from its current kernel so that exactly
    ``round(schedule(t) * n)`` entries are zero; weights masked before stay
    masked. After every batch the kernels are multiplied by their masks, so
    the zeros survive the optimizer's update (Adam's momentum would otherwise
    move them). Train for at least ``end_step`` steps to reach the final
    sparsity.

    No layer is wrapped, so the model needs no stripping before export.

    Args:
        schedule: :class:`PolynomialDecay` or :class:`ConstantSparsity`.
        layers: names of the layers to prune; default: every Dense/Conv layer.

    Attributes:
        step: optimizer steps taken with this callback so far.
        log: ``(step, total kernel sparsity)`` after each mask update.

    Raises:
        TypeError: ``schedule`` is not one of the two schedules, or bad ``layers``.
        ValueError: at the start of ``fit``: a model without a prunable layer,
            or an unknown / non-prunable layer name (see :func:`prunable_layers`).
    """

    def __init__(self, schedule: Schedule, layers: Sequence[str] | None = None) -> None:
        super().__init__()
        self.schedule = _check_schedule(schedule)
        self.layer_names = _check_names(layers)
        self.step = 0
        self.log: list[tuple[int, float]] = []
        self._checked = -1                 # last step whose should_prune was evaluated
        self._layers: list[keras.layers.Layer] = []
        self._masks: list[Any] = []        # backend tensors, one per layer (after 1st update)
        self._model_id: int | None = None
        self._iter0 = 0
        self._step0 = 0

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The current 0/1 masks by layer name (empty before the first update)."""
        return {layer.name: keras.ops.convert_to_numpy(m)
                for layer, m in zip(self._layers, self._masks, strict=True)}

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        if self._model_id != id(model):
            self._layers = prunable_layers(model, self.layer_names)
            self._masks, self._model_id = [], id(model)
        self._iter0 = int(model.optimizer.iterations.numpy())
        self._step0 = self.step
        self._update(self.step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        iters = int(self.model.optimizer.iterations.numpy())
        self.step = self._step0 + iters - self._iter0
        self._update(self.step)

    def _update(self, step: int) -> None:
        due = any(self.schedule.should_prune(t) for t in range(self._checked + 1, step + 1))
        self._checked = max(self._checked, step)
        if due:
            target = self.schedule(step)
            old = self._masks or [None] * len(self._layers)
            self._masks = [
                keras.ops.convert_to_tensor(
                    _magnitude_mask(np.asarray(layer.kernel.numpy()), target,
                                    None if prev is None else keras.ops.convert_to_numpy(prev)),
                    dtype=layer.kernel.dtype)
                for layer, prev in zip(self._layers, old, strict=True)]
        for layer, mask in zip(self._layers, self._masks, strict=True):
            layer.kernel.assign(keras.ops.multiply(layer.kernel, mask))
        if due:
            self.log.append((step, kernel_sparsity(self.model, self._names()).sparsity))

    def _names(self) -> list[str]:
        return [layer.name for layer in self._layers]


# --------------------------------------------------------------------------- report
@dataclass
class LayerSparsity:
    """Exact zeros of one layer's kernel."""

    layer: str
    shape: tuple[int, ...]
    size: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass
class SparsityReport:
    """Per-layer and total fraction of exact zeros in the pruned kernels (biases excluded)."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(r.size for r in self.layers)

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def sparsity(self) -> float:
        """Zeros over all kernel entries of the reported layers."""
        return self.zeros / self.size if self.size else 0.0

    @property
    def per_layer(self) -> dict[str, float]:
        return {r.layer: r.sparsity for r in self.layers}

    def as_row(self) -> dict[str, Any]:
        """The totals: kernel ``size``, ``zeros`` and ``sparsity`` over the reported layers."""
        return {"layers": len(self.layers), "size": self.size, "zeros": self.zeros,
                "sparsity": self.sparsity}

    def table(self) -> Table:
        return Table([{"layer": r.layer, "kernel shape": r.shape, "entries": r.size,
                       "zeros": r.zeros, "sparsity (%)": round(100 * r.sparsity, 2)}
                      for r in self.layers], title="kernel sparsity")

    def __str__(self) -> str:
        return (f"{self.table()}\ntotal {self.zeros:,} of {self.size:,} kernel entries are "
                f"zero (sparsity {self.sparsity:.2%})")


def kernel_sparsity(model: keras.Model, layers: Sequence[str] | None = None) -> SparsityReport:
    """Count the exact zeros in the kernels of ``model`` (unchanged), per layer and in total.

    Args:
        model: a built Keras model.
        layers: names of the layers to count; default: every Dense/Conv layer.

    Raises:
        TypeError, ValueError: as :func:`prunable_layers`.
    """
    rows = []
    for layer in prunable_layers(model, layers):
        k = np.asarray(layer.kernel.numpy())
        rows.append(LayerSparsity(layer.name, tuple(int(d) for d in k.shape), int(k.size),
                                  int(k.size - np.count_nonzero(k))))
    return SparsityReport(rows)


# --------------------------------------------------------------------------- one shot
def magnitude_prune(model: keras.Model, sparsity: float, *,
                    layers: Sequence[str] | None = None) -> keras.Model:
    """A copy of ``model`` whose kernels have exactly ``round(sparsity * n)`` zeros each.

    One-shot magnitude pruning (Han et al. 2015), layer by layer, no
    fine-tuning. The copy is made with ``keras.models.clone_model`` and, when
    ``model`` is compiled, compiled with the same configuration (a fresh
    optimizer). The caller's model is unchanged.

    Args:
        model: a built Sequential or functional Keras model (``clone_model``
            cannot copy a subclassed model).
        sparsity: fraction of each pruned kernel set to zero, in [0, 1).
        layers: names of the layers to prune; default: every Dense/Conv layer.

    Raises:
        TypeError, ValueError: as :func:`prunable_layers`; ``sparsity`` outside [0, 1).
    """
    sparsity = check_sparsity(sparsity)
    names = [layer.name for layer in prunable_layers(model, layers)]
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    if model.compiled:
        new.compile_from_config(model.get_compile_config())
    for layer in prunable_layers(new, names):
        k = np.asarray(layer.kernel.numpy())
        layer.kernel.assign(k * _magnitude_mask(k, sparsity))
    return new
