"""One comparison table for every "variants: x smaller, x faster, accuracy" claim."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._checks import check_example_input
from ..train import evaluate
from .latency import LatencyComparison, compare_latency
from .size import count_parameters, state_dict_bytes
from .table import Table

COLUMNS = ["variant", "bytes", "size x", "nonzero params", "latency ms", "speed-up x",
           "accuracy", "acc drop (pts)", "note"]


@dataclass
class Variant:
    """A row of :func:`compare` that is more than a plain ``nn.Module``.

    Either a ``model`` (timed like a module variant, on the comparison's
    input) whose other fields override what :func:`compare` would measure
    (a BatchNorm-folded model that stands for the original's file, say), or
    a ``run`` (an ONNX Runtime or LiteRT runner). With neither, the row says
    only ``note`` (why the variant does not apply).

    Attributes:
        model: a module, run in eval mode under ``inference_mode``.
        run: one timed call, when there is no ``model``.
        predict: ``predict(inputs) -> logits`` (a tensor or a NumPy array) for
            the accuracy; default ``model``; ``None`` without a model: not scored.
        size_bytes: bytes of its serialized artifact; default: ``model``'s
            state dict saved with ``torch.save``.
        nonzero: its non-zero parameters; default: ``model``'s, where its
            parameters are plain float tensors.
        note: what it is.
    """

    model: nn.Module | None = None
    run: Callable[[], Any] | None = None
    predict: Callable[[torch.Tensor], Any] | None = None
    size_bytes: int | None = None
    nonzero: int | None = None
    note: str = ""


def _nonzero(model: nn.Module) -> int | None:
    """Non-zero parameters, where the weights are plain float parameters; ``None`` for a
    quantized model, whose weights live in int8 buffers, packed ``torch.ao`` objects or
    tensor subclasses (its float parameters, the biases say, would undercount it)."""
    params = list(model.parameters())
    quantized = (
        not params
        or any(b.dtype in (torch.int8, torch.uint8) for b in model.buffers())
        or any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
        or any(type(p.detach()) is not torch.Tensor or not p.is_floating_point()
               for p in params))
    return None if quantized else count_parameters(model).nonzero


def _as_variant(name: str, v: nn.Module | Variant) -> Variant:
    """A :class:`Variant` with a ``model`` and every field filled in."""
    if isinstance(v, nn.Module):
        v = Variant(model=v)
    if not isinstance(v, Variant):
        raise TypeError(f"variants[{name!r}] must be an nn.Module or a measure.Variant, "
                        f"got {type(v).__name__}")
    if v.model is None:
        return v
    if not isinstance(v.model, nn.Module):
        raise TypeError(f"variants[{name!r}].model must be an nn.Module, "
                        f"got {type(v.model).__name__}")
    return Variant(model=v.model, run=None, predict=v.predict or v.model,
                   size_bytes=v.size_bytes if v.size_bytes is not None
                   else state_dict_bytes(v.model),
                   nonzero=v.nonzero if v.nonzero is not None else _nonzero(v.model),
                   note=v.note)


def compare(variants: Mapping[str, nn.Module | Variant], example_input: Any = None,
            eval_data: Iterable | None = None, *, baseline: str | None = None,
            repeats: int = 30, warmup: int = 3, threads: int = 1,
            title: str = "comparison", batch_size: int | None = None,
            timing: LatencyComparison | None = None) -> Table:
    """Size, non-zero parameters, latency and accuracy of model variants, in one table.

    The library's one comparison table (the chapters, ``companion report`` and
    the benchmarks use it). For each variant:

    * ``bytes``: its serialized size (a module's ``state_dict`` saved with
      ``torch.save``; a :class:`Variant` says its own), and ``size x``: the
      first variant's bytes over these;
    * ``latency ms``: the median of ``repeats`` calls timed in interleaved
      rounds by :func:`compare_latency` (a module on ``example_input``, in
      eval mode under ``inference_mode``), and ``speed-up x`` against
      ``baseline`` (default: the first variant that runs; make it the
      fastest plain fp32 path);
    * ``accuracy`` over ``eval_data`` with :func:`companion.train.evaluate`,
      and ``acc drop (pts)`` against the first variant.

    A :class:`Variant` with neither ``model`` nor ``run`` gets a row with its
    note only.

    Args:
        variants: name -> an ``nn.Module`` or a :class:`Variant`; the first is
            the reference for size and accuracy.
        example_input: the input the module variants are timed on.
        eval_data: yields ``(inputs, labels)``; without it there is no accuracy.
        baseline: the name the speed-ups are relative to.
        repeats, warmup, threads: as in :func:`compare_latency`.
        title: the table's title; the timing setting and the CPU are appended.
        batch_size: the batch the variants run on, for the title (default:
            that of ``example_input``).
        timing: a :class:`LatencyComparison` of these variants already made
            (by :func:`compare_latency`, say to keep for :func:`assert_timing`):
            its medians are used instead of timing again, and ``baseline``
            defaults to its baseline.

    Raises:
        ValueError: no variants, an unknown or inapplicable ``baseline``, or a
            module without ``example_input``.
        TypeError: a variant that is neither a module nor a :class:`Variant`,
            ``example_input`` not a tensor or a tuple of tensors, or
            ``eval_data`` not an iterable of batches.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> module or Variant")
    if example_input is not None:
        check_example_input(example_input)
    if eval_data is not None and (isinstance(eval_data, (str, bytes, torch.Tensor))
                                  or not isinstance(eval_data, Iterable)):
        raise TypeError(f"eval_data must be an iterable of (inputs, labels) batches (a "
                        f"DataLoader, or a list of pairs), got {type(eval_data).__name__}")
    specs = {name: _as_variant(name, v) for name, v in variants.items()}
    runs = {name: v.model if v.model is not None else v.run for name, v in specs.items()
            if v.model is not None or v.run is not None}
    if not runs:
        raise ValueError("variants: none can be run (no Variant has a model or a run)")
    if timing is not None and (not isinstance(timing, LatencyComparison)
                               or set(timing.names) != set(runs)):
        raise ValueError(f"timing must be a LatencyComparison of the variants {list(runs)}")
    default = timing.baseline if timing is not None else next(iter(runs))
    base = default if baseline is None else baseline
    if base not in runs:
        raise ValueError(f"baseline must name a variant that runs, one of {list(runs)}, "
                         f"got {baseline!r}")
    if timing is None:
        timing = compare_latency(runs, example_input, baseline=base, repeats=repeats,
                                 warmup=warmup, threads=threads)
    rounds = len(timing.times_ms[base])
    nan = float("nan")
    rows, first = [], None
    for name, v in specs.items():
        row: dict[str, Any] = dict.fromkeys(COLUMNS, nan) | {"variant": name, "note": v.note}
        if name in runs:
            row |= {"bytes": v.size_bytes if v.size_bytes is not None else nan,
                    "nonzero params": v.nonzero if v.nonzero is not None else nan,
                    "latency ms": timing.median_ms(name),
                    "speed-up x": timing.median_ms(base) / timing.median_ms(name)}
            if eval_data is not None and v.predict is not None:
                row["accuracy"] = evaluate(v.predict, eval_data)
            first = first or row
            row["size x"] = first["bytes"] / row["bytes"] if row["bytes"] else nan
            if not math.isnan(row["accuracy"]):
                row["acc drop (pts)"] = 100 * (first["accuracy"] - row["accuracy"])
        rows.append(row)
    batch_size = batch_size or timing.batch_size
    batch = f"batch {batch_size}, " if batch_size else ""
    return Table(rows, title=(f"{title}: latency at {batch}{timing.threads} thread(s), "
                              f"{timing.device}, median of {rounds} interleaved rounds; "
                              f"speed-up against {base}\n{timing.cpu}"))
