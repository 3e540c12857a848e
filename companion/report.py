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
PyTorch happens to do. A variant that does not apply to the model (static int8 needs an
``nn.Sequential``, say) gets a row that says why instead of a number.

The command line ``companion report`` wraps it (see :mod:`companion.cli`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ._checks import check_float, check_int, check_module
from .measure import Table, compare_latency, count_parameters, serialized_size

__all__ = ["ReportConfig", "Variant", "optimization_report", "plot_report"]


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


@dataclass
class Variant:
    """A way to run the model: what it is, its artifact, its runner and predictor."""

    name: str
    note: str
    size_bytes: int | None = None
    run: Callable[[], Any] | None = None     # one timed call at the report's batch size
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None
    nonzero: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _state_dict_bytes(model: nn.Module) -> int:
    return serialized_size(model).bytes


def _torch_variant(name: str, note: str, model: nn.Module, x: torch.Tensor,
                   size: int | None = None, float_weights: bool = True,
                   counted: nn.Module | None = None) -> Variant:
    """A PyTorch variant; non-zeros are counted only where weights are float parameters.

    ``counted`` is the model whose parameters are counted when ``model`` is a
    faster form of it (BatchNorm folded away, say).
    """
    model.eval()

    def run() -> Any:
        with torch.inference_mode():
            return model(x)
    return Variant(
        name, note,
        size_bytes=_state_dict_bytes(model) if size is None else size,
        run=run,
        predict=lambda inp: model(inp),
        nonzero=count_parameters(counted or model).nonzero if float_weights else None,
    )


def _variants(model: nn.Module, x: torch.Tensor, calibration: Iterable | None,
              cfg: ReportConfig) -> list[tuple[str, Callable[[], Variant]]]:
    """``(name, build)`` pairs: each ``build()`` makes one variant (and may fail alone)."""
    from . import infer, prune, quant, sparse

    def plain(m: nn.Module) -> tuple[str, nn.Module]:
        """The fastest plain fp32 way to run ``m`` (every float row gets the same chance)."""
        best = infer.fastest_fp32(m, x, threads=cfg.threads, rounds=max(cfg.repeats, 2))
        return best.name, best.model

    def fastest() -> Variant:
        how, fast = plain(model)
        return _torch_variant(f"fp32, {how}", "fastest plain fp32: speed-up baseline",
                              fast, x, size=_state_dict_bytes(model), counted=model)

    def dynamic() -> Variant:
        q = quant.quantize_model(model, quant.DynamicInt8Config())
        return _torch_variant("int8 dynamic", "torch.ao int8 Linear kernels", q, x,
                              float_weights=False)

    def static() -> Variant:
        if calibration is None:
            raise ValueError("needs calibration data")
        q = quant.quantize_model(model, quant.StaticInt8Config(calibration=calibration))
        return _torch_variant("int8 static", "torch.ao int8 kernels end to end", q, x,
                              float_weights=False)

    def pruned(s: float) -> Variant:
        p = prune.remove(prune.prune(model, s))
        size = len(sparse.encode(p, sparse.SparseConfig(values="float32")))
        how, fast = plain(p)
        return _torch_variant(f"pruned {s:.0%}", f"sparse fp32 file (LZMA); dense kernels, {how}",
                              fast, x, size=size, counted=p)

    def channels() -> Variant:
        small = prune.prune_channels(model, cfg.channel_ratio)
        how, fast = plain(small)
        return _torch_variant(f"channels -{cfg.channel_ratio:.0%}",
                              f"smaller dense model, not fine-tuned; {how}", fast, x,
                              size=_state_dict_bytes(small), counted=small)

    exported: dict[str, bytes] = {}  # the fp32 export, shared by both ONNX rows

    def onnx(int8: bool) -> Variant:
        if "fp32" not in exported:
            exported["fp32"] = infer.export_onnx(model, x)
        if int8:
            if calibration is None:
                raise ValueError("needs calibration data")
            calib = torch.cat([b[0] for _, b in zip(range(8), calibration, strict=False)])
            data = infer.quantize_onnx_int8(exported["fp32"], calib)
        else:
            data = exported["fp32"]
        session = infer.ort_session(data, threads=cfg.threads)
        return Variant(
            f"ONNX Runtime {'int8' if int8 else 'fp32'}", "another engine (section 3.3)",
            size_bytes=len(data), run=infer.ort_runner(session, x),
            predict=lambda inp: torch.from_numpy(infer.ort_predict(session, inp)))

    builds: list[tuple[str, Callable[[], Variant]]] = [
        ("fp32", lambda: _torch_variant("fp32", "the model as given", model, x)),
        ("fp32 fastest", fastest)]
    if "dynamic" in cfg.int8:
        builds.append(("int8 dynamic", dynamic))
    if "static" in cfg.int8:
        builds.append(("int8 static", static))
    builds += [(f"pruned {s:.0%}", lambda s=s: pruned(s)) for s in cfg.sparsities]
    if cfg.channel_ratio is not None:
        builds.append((f"channels -{cfg.channel_ratio:.0%}", channels))
    if cfg.onnx:
        builds += [("ONNX Runtime fp32", lambda: onnx(False)),
                   ("ONNX Runtime int8", lambda: onnx(True))]
    return builds


def _accuracy(predict: Callable[[torch.Tensor], torch.Tensor], loader: Iterable) -> float:
    correct = total = 0
    with torch.inference_mode():
        for xb, yb in loader:
            correct += int((predict(xb).argmax(1) == yb).sum())
            total += len(yb)
    return correct / total


def optimization_report(model: nn.Module, eval_loader: Iterable, *,
                        calibration: Iterable | None = None,
                        config: ReportConfig | None = None,
                        progress: bool = True) -> Table:
    """Apply the book's techniques to ``model`` and measure each variant.

    Args:
        model: a trained float model on the CPU (left unchanged).
        eval_loader: ``(inputs, labels)`` batches for accuracy; its first batch
            also gives the input shape for latency and export.
        calibration: ``(inputs, labels)`` batches for static int8's activation
            ranges, taken from training or validation data. Without it the
            static row says "not applicable" (calibrating on the evaluation
            data would leak it into the result).
        config: which variants, batch size, threads and repeats.
        progress: show a progress bar over the variants.

    Returns:
        A :class:`~companion.measure.Table` with one row per variant: bytes,
        size ratio (against the model as given), non-zero parameters, latency
        (median ms), speed-up (against the fastest plain fp32 row) and accuracy.
        Its title names the CPU (:func:`companion.measure.cpu_info`).

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``eval_loader`` yields nothing.
    """
    check_module(model, "model")
    cfg = config or ReportConfig()
    first = next(iter(eval_loader), None)
    if first is None:
        raise ValueError("eval_loader yielded no batch")
    xb = first[0]
    reps = -(-cfg.batch_size // len(xb))
    x = torch.cat([xb] * reps)[: cfg.batch_size].contiguous()
    model = model.eval()
    rows: list[dict[str, Any]] = []
    runs: dict[str, Callable[[], Any]] = {}
    builds = _variants(model, x, calibration, cfg)
    for name, build in tqdm(builds, desc="report", disable=not progress):
        try:
            v = build()
            row: dict[str, Any] = {"variant": v.name, "note": v.note, "bytes": v.size_bytes,
                                   "nonzero params": v.nonzero,
                                   "accuracy": _accuracy(v.predict, eval_loader)}
            runs[v.name] = v.run
        except Exception as err:  # one variant failing must not hide the others
            if name == "fp32":
                raise
            row = {"variant": name, "note": f"not applicable: {err}"}
        rows.append(row)
    base = rows[1]["variant"] if rows[1]["variant"] in runs else rows[0]["variant"]
    timing = compare_latency(runs, baseline=base, rounds=max(cfg.repeats, 2),
                             threads=cfg.threads)
    first = rows[0]
    for r in rows:
        if r["variant"] in runs:
            r["latency ms"] = timing.median_ms(r["variant"])
            r["size x"] = first["bytes"] / r["bytes"]
            r["speed-up x"] = timing.speedup(r["variant"])
            r["acc drop (pts)"] = 100 * (first["accuracy"] - r["accuracy"])
    order = ["variant", "bytes", "size x", "nonzero params", "latency ms", "speed-up x",
             "accuracy", "acc drop (pts)", "note"]
    nan = float("nan")
    rows = [{k: r.get(k) if r.get(k) is not None else ("" if k == "note" else nan)
             for k in order} for r in rows]
    return Table(rows, title=(f"optimization report: latency at batch {cfg.batch_size}, "
                              f"{timing.threads} thread(s), CPU, median of {cfg.repeats} "
                              f"interleaved rounds; speed-up against {base}\n{timing.cpu}"))


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
