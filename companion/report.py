"""One table for your own model: the book's techniques applied and measured.

:func:`optimization_report` takes a trained PyTorch model and an evaluation
loader, builds each variant (dynamic and static int8, unstructured pruning at
chosen sparsities, structured channel pruning, ONNX Runtime), and measures
every row the same way: bytes of the serialized artifact, median latency at
one batch size and thread count, and accuracy on the loader. Nothing is
estimated. All variants are timed together in interleaved rounds
(:func:`companion.measure.compare_latency`), and speed-ups are relative to the
fastest plain float32 way to run the model (:func:`companion.infer.fastest_fp32`:
BatchNorm folded, channels-last where it helps), not to whatever eager
PyTorch happens to do; when no plain form beats the model as given, the
table has one fp32 row, the baseline. Static int8 goes through PT2E (:mod:`companion.pt2e`:
``torch.export``, torchao's ``X86InductorQuantizer``, ``torch.compile``) and
channel pruning through the traced graph (Torch-Pruning), so both apply to
any exportable model, a ResNet included. A variant that does not apply to the
model (no calibration data, say) gets a row that says why instead of a
number, and every row's note says what it was calibrated on.

The model may return a tensor of logits or a structure holding them (a
HuggingFace ``ModelOutput`` with ``.logits``, a dict with ``"logits"``, a
tuple whose first element is the logits); ``output_fn`` picks the logits out
of anything else. It may be a module from ``torch.export`` (a ``.pt2``
archive), which runs as it is: the rows that need the model's layers as
``nn.Module`` objects (pruning) say "not applicable".

The command line ``companion report`` wraps it (see :mod:`companion.cli`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ._checks import (
    CALIBRATION_BATCHES,
    batch_inputs,
    check_calibration,
    check_float,
    check_int,
    check_module,
    evaluating,
    first_line,
    is_exported,
)
from .measure import Table, Variant, compare, count_parameters, state_dict_bytes
from .train import logits_of as _logits

__all__ = ["ReportConfig", "optimization_report", "plot_report"]


@dataclass
class ReportConfig:
    """Which variants to build and how to measure them.

    Attributes:
        int8: any of ``"dynamic"``, ``"static"`` (static needs calibration data).
        sparsities: unstructured magnitude pruning levels, each in [0, 1).
            Their size is the sparse file of :mod:`companion.sparse` with the
            non-zero values kept in float32 (no weight sharing, so the row
            shows what pruning alone saves; LZMA on top); their latency is
            dense (masked zeros run at dense speed).
        channel_ratio: fraction of channels removed by structured pruning
            (``None`` to skip); the result is a smaller dense model.
        onnx: add ONNX Runtime fp32 and int8 rows.
        batch_size: batch of the latency measurement.
        threads: PyTorch / ONNX Runtime threads during timing.
        repeats: interleaved rounds of timing (one call of every variant each;
            the median is reported).
    """

    int8: tuple[str, ...] = ("dynamic", "static")
    sparsities: tuple[float, ...] = (0.5, 0.9)
    channel_ratio: float | None = 0.5
    onnx: bool = True
    batch_size: int = 64
    threads: int = 1
    repeats: int = 20

    def __post_init__(self) -> None:
        for kind in self.int8:
            if kind not in ("dynamic", "static"):
                raise ValueError(f"int8 entries must be 'dynamic' or 'static', got {kind!r}")
        for s in self.sparsities:
            check_float(s, "sparsities", min_value=0.0, max_value=1.0, max_inclusive=False)
        if self.channel_ratio is not None:
            check_float(self.channel_ratio, "channel_ratio", min_value=0.0, max_value=1.0,
                        min_inclusive=False, max_inclusive=False)
        check_int(self.batch_size, "batch_size", min_value=1)
        check_int(self.threads, "threads", min_value=1)
        check_int(self.repeats, "repeats", min_value=1)


def _count(loader: Iterable, max_batches: int | None = None) -> int:
    """Samples in the first ``max_batches`` batches of ``(inputs, ...)`` or input batches."""
    n = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        n += len(batch_inputs(batch)[0])
    return n


def _torch_variant(name: str, note: str, model: nn.Module, x: torch.Tensor,
                   size: int | None = None, float_weights: bool = True,
                   counted: nn.Module | None = None,
                   output_fn: Callable[[Any], torch.Tensor] = _logits) -> tuple[str, Variant]:
    """A PyTorch variant; non-zeros are counted only where weights are float parameters.

    ``model`` is the report's own copy (never the caller's): it is put in
    eval mode unless it comes from ``torch.export``, whose mode is fixed.
    ``counted`` is the model whose parameters are counted when ``model`` is a
    faster form of it (BatchNorm folded away, say).
    """
    if not is_exported(model):
        model.eval()

    def run() -> Any:
        with torch.inference_mode():
            return model(x)
    return name, Variant(
        run=run, predict=lambda inp: output_fn(model(inp)),
        size_bytes=state_dict_bytes(model) if size is None else size,
        nonzero=count_parameters(counted or model).nonzero if float_weights else None,
        note=note)


class _LogitsOnly(nn.Module):
    """``output_fn(model(x))`` as a module, so that an export has one output: the logits."""

    def __init__(self, model: nn.Module, output_fn: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.output_fn = output_fn

    def train(self, mode: bool = True) -> _LogitsOnly:
        self.training = mode
        if not is_exported(self.model):   # an exported module refuses train()/eval()
            self.model.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_fn(self.model(x))


def _calibrated_on(n: int, x: torch.Tensor) -> str:
    what = "images" if x.dim() == 4 and x.is_floating_point() else "samples"
    return f"calibrated on {n:,} calibration {what}"


_NO_CALIBRATION = ("needs calibration data (pass calibration=...; with companion report, "
                   "x_calib in the .npz)")
_NO_MODULES = ("a torch.export program has no nn.Module layers to {what}; pass the model "
               "itself (companion report: a state dict and --arch)")
_EXPORT_HELP = ("export with a dynamic batch: torch.export.export(model.eval(), (x,), "
                "dynamic_shapes=({0: torch.export.Dim('batch')},))")


# --------------------------------------------------------------------------- the variants
@dataclass
class _Work:
    """What every variant builder reads: the report's own eval-mode copy of the model,
    the timing batch, the calibration data, the config and the logits picker."""

    model: nn.Module
    x: torch.Tensor
    calibration: Iterable | None
    cfg: ReportConfig
    output_fn: Callable[[Any], torch.Tensor]
    onnx_fp32: bytes | None = None   # the fp32 export, shared by both ONNX rows
    calibration_note: str | None = None   # set by calibrated_on()

    @property
    def exported(self) -> bool:
        return is_exported(self.model)

    def plain(self, m: nn.Module) -> tuple[str, nn.Module]:
        """The fastest plain fp32 way to run ``m`` (every float row gets the same chance)."""
        from .infer import fastest_fp32

        best = fastest_fp32(m, self.x, threads=self.cfg.threads,
                            repeats=max(self.cfg.repeats, 2))
        return best.name, best.model

    def row(self, name: str, note: str, m: nn.Module, **kwargs: Any) -> tuple[str, Variant]:
        return _torch_variant(name, note, m, self.x, output_fn=self.output_fn, **kwargs)

    def need_modules(self, what: str) -> None:
        if self.exported:
            raise ValueError(_NO_MODULES.format(what=what))

    def need_calibration(self) -> Iterable:
        if self.calibration is None:
            raise ValueError(_NO_CALIBRATION)
        return self.calibration

    def calibrated_on(self) -> str:
        """What the int8 rows were calibrated on; the batches are counted once, for both."""
        if self.calibration_note is None:
            n = _count(self.need_calibration(), CALIBRATION_BATCHES)
            self.calibration_note = _calibrated_on(n, self.x)
        return self.calibration_note


_Built = tuple[str, Variant] | None


def _fp32_given(w: _Work, _: Any) -> _Built:
    given = "the torch.export program as given" if w.exported else "the model as given"
    return w.row("fp32", given, w.model)


def _fp32_fastest(w: _Work, _: Any) -> _Built:
    """The speed-up baseline; no row (``None``) when it is the model as given ("eager")."""
    how, fast = w.plain(w.model)
    if how == "eager":
        return None
    return w.row(f"fp32, {how}", "fastest plain fp32: speed-up baseline", fast,
                 size=state_dict_bytes(w.model), counted=w.model)


def _int8_dynamic(w: _Work, _: Any) -> _Built:
    from . import quant

    w.need_modules("swap for int8 kernels")
    q = quant.quantize_model(w.model, quant.DynamicInt8Config())
    return w.row("int8 dynamic", "torch.ao int8 Linear kernels; activation ranges measured at "
                 "run time (no calibration)", q, float_weights=False)


def _int8_static(w: _Work, _: Any) -> _Built:
    from .pt2e import compile_int8, quantize_pt2e

    calibration = w.need_calibration()
    graph = quantize_pt2e(_LogitsOnly(w.model, w.output_fn), w.x, calibration,
                          num_batches=CALIBRATION_BATCHES)
    run_int8 = compile_int8(graph, w.x)
    return "int8 static", Variant(
        run=lambda: run_int8(w.x), predict=run_int8, size_bytes=state_dict_bytes(graph),
        note=("PT2E: torchao X86InductorQuantizer + torch.compile int8 kernels; "
              f"{w.calibrated_on()}"))


def _pruned(w: _Work, sparsity: float) -> _Built:
    from . import prune, sparse

    w.need_modules("prune")
    pruned_model = prune.remove(prune.prune(w.model, sparsity))
    blob = sparse.encode(pruned_model, sparse.SparseConfig(values="float32"))
    # the row's model is the one loaded back from the very file whose bytes it prints
    p = copy.deepcopy(pruned_model)
    p.load_state_dict(sparse.decode(blob))
    how, fast = w.plain(p)
    return w.row(f"pruned {sparsity:.0%}", f"magnitude pruning, not fine-tuned; sparse fp32 "
                 f"file (LZMA); dense kernels, {how}", fast, size=len(blob), counted=p)


def _channels(w: _Work, ratio: float) -> _Built:
    from . import prune

    w.need_modules("prune")
    # the book's hand-followed chain for Sequential models, the traced graph otherwise
    traced = None if isinstance(w.model, nn.Sequential) else w.x[:2]
    small = prune.prune_channels(w.model, ratio, example_input=traced)
    how, fast = w.plain(small)
    return w.row(f"channels -{ratio:.0%}", f"smaller dense model, not fine-tuned; {how}", fast,
                 size=state_dict_bytes(small), counted=small)


def _onnx(w: _Work, int8: bool) -> _Built:
    from . import infer

    calibration = w.need_calibration() if int8 else None
    if w.onnx_fp32 is None:
        with torch.inference_mode():
            plain_tensor = isinstance(w.model(w.x), torch.Tensor)
        w.onnx_fp32 = infer.export_onnx(
            w.model if plain_tensor else _LogitsOnly(w.model, w.output_fn), w.x)
    if calibration is not None:
        data = infer.quantize_onnx_int8(w.onnx_fp32, calibration,
                                        num_batches=CALIBRATION_BATCHES)
        note = f"ONNX Runtime static int8 (QDQ); {w.calibrated_on()}"
    else:
        data, note = w.onnx_fp32, "another engine (section 3.3)"
    session = infer.ort_session(data, threads=w.cfg.threads)
    return f"ONNX Runtime {'int8' if int8 else 'fp32'}", Variant(
        run=infer.ort_runner(session, w.x),
        predict=lambda inp: infer.ort_predict(session, inp), size_bytes=len(data), note=note)


def _planned(cfg: ReportConfig) -> list[tuple[str, Callable[[_Work, Any], _Built], Any]]:
    """The report's rows in table order: ``(name, builder, builder's argument)``, each
    ``builder(work, argument)`` making one variant (it may fail alone)."""
    rows: list[tuple[str, Callable[[_Work, Any], _Built], Any]] = [
        ("fp32", _fp32_given, None), ("fp32 fastest", _fp32_fastest, None)]
    int8 = {"dynamic": _int8_dynamic, "static": _int8_static}
    rows += [(f"int8 {kind}", build, None) for kind, build in int8.items() if kind in cfg.int8]
    rows += [(f"pruned {s:.0%}", _pruned, s) for s in cfg.sparsities]
    if cfg.channel_ratio is not None:
        rows.append((f"channels -{cfg.channel_ratio:.0%}", _channels, cfg.channel_ratio))
    if cfg.onnx:
        rows += [("ONNX Runtime fp32", _onnx, False), ("ONNX Runtime int8", _onnx, True)]
    return rows


def _check_first_batch(model: nn.Module, loader: Iterable, output_fn: Callable[[Any], Any],
                      *, source: str = "eval_loader") -> None:
    """Run the model once on the first batch of ``loader``; check its logits and labels.

    The one first-batch validator (:func:`optimization_report` and
    ``companion report`` call it): each problem is a ``ValueError`` in one
    line that names ``source`` (``eval_loader``, or ``--data file.npz``) and
    says how to fix it. Every batch's labels are checked against the number
    of logits.

    Raises:
        TypeError: the batches do not hold a tensor of inputs, or the logits
            cannot be found in the model's output (pass ``output_fn``).
        ValueError: ``loader`` yields nothing; the inputs contain NaN or inf;
            the model fails on the batch (the message gives its shape); the
            logits are not ``(batch, classes)``; labels are not one integer
            per input, or out of range for the number of logits.
    """
    first = next(iter(loader), None)
    if first is None:
        raise ValueError(f"{source} yielded no batch")
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise TypeError(f"{source} must yield (inputs, labels) batches, got a batch of "
                        f"{type(first).__name__}")
    xb, yb = first[0], first[1]
    if not isinstance(xb, torch.Tensor):
        raise TypeError(f"{source} must yield (inputs, labels) with a tensor of inputs, "
                        f"got {type(xb).__name__}")
    if xb.is_floating_point() and not torch.isfinite(xb).all():
        raise ValueError(f"{source}: the first batch of inputs contains NaN or inf")
    shape = f"shape {tuple(xb.shape)}, dtype {str(xb.dtype).replace('torch.', '')}"
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(xb)
    except Exception as err:  # noqa: BLE001 - a user model fails in many ways
        hint = (f"; if it ran at another batch size, {_EXPORT_HELP}"
                if is_exported(model) else "")
        raise ValueError(f"{source}: the model fails on a batch of {shape} "
                         f"({type(err).__name__}: {first_line(err)}); give inputs of the "
                         f"shape the model takes (N,C,H,W for images){hint}") from None
    logits = output_fn(out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"output_fn: the model's logits must have shape (batch, classes), "
                         f"got {got} for a batch of {shape}")
    labels = torch.as_tensor(yb)
    if labels.is_floating_point() or labels.dim() != 1 or len(labels) != len(xb):
        raise ValueError(f"{source}: labels must be a 1-D integer tensor, one per input, "
                         f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    classes = logits.shape[1]
    every = torch.cat([torch.as_tensor(b[1]).reshape(-1) for b in loader])
    low, high = int(every.min()), int(every.max())
    if low < 0 or high >= classes:
        raise ValueError(f"{source}: labels must be in [0, {classes}) for a model with "
                         f"{classes} outputs (0..{classes - 1}), got labels from {low} to "
                         f"{high}; check the labels, or build the model for "
                         f"{max(high + 1, classes)} classes (num_classes)")


def optimization_report(model: nn.Module, eval_loader: Iterable, *,
                        calibration: Iterable | None = None,
                        config: ReportConfig | None = None,
                        progress: bool = True,
                        output_fn: Callable[[Any], torch.Tensor] | None = None) -> Table:
    """Apply the book's techniques to ``model`` and measure each variant.

    Args:
        model: a trained float model on the CPU, or a module from
            ``torch.export.load(path).module()``. Left exactly as it was,
            weights and train/eval mode included: the variants are built from
            an eval-mode copy.
        eval_loader: ``(inputs, labels)`` batches for accuracy; its first batch
            also gives the input shape for latency and export. Inputs may be
            float or integer (token ids).
        calibration: ``(inputs, labels)`` batches for the activation ranges of
            static int8 (PyTorch and ONNX Runtime), taken from training or
            validation data; the first ``CALIBRATION_BATCHES`` (8) are used.
            Without it those rows say "not applicable" (calibrating on the
            evaluation data would leak it into the result).
        config: which variants, batch size, threads and repeats.
        progress: show a progress bar over the variants.
        output_fn: maps the model's output to its logits ``(batch, classes)``.
            Default: a tensor as it is, else the output's ``.logits`` (a
            HuggingFace ``ModelOutput``), its ``["logits"]`` (a dict) or its
            first element (a tuple or list).

    Returns:
        A :class:`~companion.measure.Table` with one row per variant: bytes,
        size ratio (against the model as given), non-zero parameters, latency
        (median ms), speed-up (against the fastest plain fp32 row: the model
        as given when no faster plain form exists, then shown once) and
        accuracy. Its title names the CPU (:func:`companion.measure.cpu_info`).

    Raises:
        TypeError: ``model`` is not a module, ``output_fn`` is not callable,
            ``calibration`` is not an iterable of batches, or the logits
            cannot be found in the model's output (pass ``output_fn``).
        ValueError: ``eval_loader`` yields nothing; the model fails on its
            first batch (the message gives the batch's shape); the logits are
            not ``(batch, classes)``; labels are out of range for the number
            of logits; inputs contain NaN or inf.
    """
    from .infer import eval_copy

    check_module(model, "model")
    if output_fn is not None and not callable(output_fn):
        raise TypeError(f"output_fn must be callable or None, got {type(output_fn).__name__}")
    if calibration is not None:
        check_calibration(calibration)
    out_fn = output_fn or _logits
    cfg = config or ReportConfig()
    first = next(iter(eval_loader), None)
    if first is None:
        raise ValueError("eval_loader yielded no batch")
    with contextlib.ExitStack() as stack:
        try:    # the variants are built from a copy: the caller's model stays as it was
            work = eval_copy(model)
        except Exception:  # noqa: BLE001 - not deep-copyable: use it, restore its modes after
            work = model
            stack.enter_context(evaluating(model))
        _check_first_batch(work, eval_loader, out_fn)
        xb = first[0]
        reps = -(-cfg.batch_size // len(xb))
        x = torch.cat([xb] * reps)[: cfg.batch_size].contiguous()
        variants = _build_variants(_Work(work, x, calibration, cfg, out_fn), progress)
        names = list(variants)  # the fastest plain fp32 row is the speed-up baseline
        fastest = names[1] if len(names) > 1 and names[1].startswith("fp32, ") else names[0]
        return compare(variants, eval_data=eval_loader, baseline=fastest,
                       repeats=max(cfg.repeats, 2), threads=cfg.threads,
                       title="optimization report", batch_size=cfg.batch_size)


def _build_variants(work: _Work, progress: bool) -> dict[str, Variant]:
    """Every variant that builds; one that fails gets a row saying why (fp32 must build)."""
    variants: dict[str, Variant] = {}
    for name, build, arg in tqdm(_planned(work.cfg), desc="report", disable=not progress):
        try:
            built = build(work, arg)
        except Exception as err:  # one variant failing must not hide the others
            if name == "fp32":
                raise
            variants[name] = Variant(note=f"not applicable: {first_line(err)}")
            continue
        if built is not None:
            variants[built[0]] = built[1]
        elif name == "fp32 fastest":    # the model as given is the fastest plain fp32 path
            variants["fp32"].note += "; the fastest plain fp32 here: speed-up baseline"
    return variants


def plot_report(table: Table, path: str | None = None):
    """Accuracy against bytes (log scale) and latency per variant; saved to ``path`` if given."""
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if isinstance(r.get("bytes"), (int, float))
            and not np.isnan(r["bytes"])]
    if not rows:
        raise ValueError("table has no measured rows")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for r in rows:
        a1.scatter(r["bytes"] / 1024, 100 * r["accuracy"])
        a1.annotate(r["variant"], (r["bytes"] / 1024, 100 * r["accuracy"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    a1.set_xscale("log")
    a1.xaxis.set_minor_formatter(plt.NullFormatter())
    a1.set_xlabel("serialized size (KiB, log scale)")
    a1.set_ylabel("accuracy (%)")
    a1.grid(True, alpha=0.3)
    a2.barh([r["variant"] for r in rows], [r["latency ms"] for r in rows], color="tab:blue")
    a2.invert_yaxis()
    a2.set_xlabel("median latency (ms)")
    a2.grid(True, axis="x", alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
