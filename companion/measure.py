"""Measure a model: serialized size, parameters, FLOPs, latency and accuracy.

Every number here is measured, never estimated from a model's description:

* size is the length in bytes of the serialized artifact (a state dict saved
  with ``torch.save``, a TorchScript or ``torch.export`` archive, a ``.tflite``
  file ...), optionally after gzip;
* latency is the median of repeated timed runs after warm-up, with the thread
  count and device recorded beside it;
* FLOPs are counted by running the model once with hooks on its layers.

Each function returns a small dataclass that prints as a table.
"""

from __future__ import annotations

import contextlib
import functools
import gzip as _gzip
import html
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_int, check_module, evaluating
from .train import evaluate

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
    "accuracy",
]

accuracy = evaluate  # top-1 accuracy in [0, 1]; see companion.train.evaluate


# --------------------------------------------------------------------------- tables
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass
class Table:
    """Rows of results that print as an aligned text table and save as JSON.

    In a terminal (``print``) it is plain text; displayed in Jupyter or in the
    book (``display(table)``, or a table as a cell's last value) it renders as an
    HTML table (:meth:`_repr_html_`), numbers right-aligned, with the title as
    its caption. Both show the same formatted values.

    >>> print(Table([{"model": "a", "bytes": 1024}], title="sizes"))  # doctest: +SKIP
    """

    rows: list[dict[str, Any]]
    title: str = ""

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    def __str__(self) -> str:
        cols = self.columns
        cells = [[_fmt(r.get(c, "")) for c in cols] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        def line(vals: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if i else v.ljust(w)
                             for i, (v, w) in enumerate(zip(vals, widths, strict=True)))
        out = [self.title] if self.title else []
        out += [line(cols), line(["-" * w for w in widths])]
        out += [line(row) for row in cells]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cols = self.columns
        numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                       for r in self.rows if c in r) for c in cols]

        def cell(tag: str, text: str, right: bool) -> str:
            style = ' style="text-align: right"' if right else ' style="text-align: left"'
            return f"<{tag}{style}>{html.escape(text)}</{tag}>"

        head = "".join(cell("th", c, num) for c, num in zip(cols, numeric, strict=True))
        body = "".join(
            "<tr>" + "".join(cell("td", _fmt(r.get(c, "")), num)
                             for c, num in zip(cols, numeric, strict=True)) + "</tr>"
            for r in self.rows)
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return (f'<table class="companion-table">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def to_markdown(self) -> str:
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in self.rows]
        return "\n".join(lines)

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"title": self.title, "rows": self.rows}, indent=2,
                                         default=str))


# --------------------------------------------------------------------------- size
def bytes_per_value(dtype: torch.dtype) -> float:
    """Storage of one value: 4 for float32, 2 for bf16/fp16, 1 for int8 ..."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if dtype == torch.bool:
        return 1.0
    return torch.empty((), dtype=dtype).element_size()


@dataclass
class SizeReport:
    """Bytes of one serialized artifact, raw and after gzip (level 9)."""

    format: str
    bytes: int
    gzip_bytes: int

    @property
    def kib(self) -> float:
        return self.bytes / 1024

    def __str__(self) -> str:
        return (f"{self.format}: {self.bytes:,} bytes ({self.kib:,.1f} KiB), "
                f"gzip {self.gzip_bytes:,} bytes")


def _serialize(obj: Any, fmt: str, example_input: Any) -> bytes:
    buf = io.BytesIO()
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"obj: no file at {path}")
        return path.read_bytes()
    if isinstance(obj, torch.export.ExportedProgram):
        torch.export.save(obj, buf)
        return buf.getvalue()
    if isinstance(obj, torch.jit.ScriptModule):
        torch.jit.save(obj, buf)
        return buf.getvalue()
    if isinstance(obj, dict):
        torch.save(obj, buf)
        return buf.getvalue()
    check_module(obj, "obj")
    if fmt == "state_dict":
        torch.save(obj.state_dict(), buf)
    elif fmt == "torchscript":
        if example_input is None:
            raise ValueError("example_input is required for fmt='torchscript'")
        with torch.no_grad(), evaluating(obj):
            torch.jit.save(torch.jit.trace(obj, example_input), buf)
    elif fmt == "exported":
        if example_input is None:
            raise ValueError("example_input is required for fmt='exported'")
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with evaluating(obj):
            program = torch.export.export(obj, args)
        torch.export.save(program, buf)
    else:
        raise ValueError(f"fmt must be 'state_dict', 'torchscript' or 'exported', got {fmt!r}")
    return buf.getvalue()


def serialized_size(obj: Any, *, fmt: str = "state_dict",
                    example_input: Any = None) -> SizeReport:
    """Serialize ``obj`` in memory and count the bytes.

    Args:
        obj: an ``nn.Module`` (serialized as ``fmt``), a state dict, a
            ``ScriptModule``, an ``ExportedProgram``, raw ``bytes`` (e.g. a
            TFLite flatbuffer) or a path to a file.
        fmt: for modules: ``"state_dict"`` (``torch.save(model.state_dict())``),
            ``"torchscript"`` (traced) or ``"exported"`` (``torch.export``).
        example_input: needed by ``"torchscript"`` and ``"exported"``.
    """
    data = _serialize(obj, fmt, example_input)
    label = fmt if isinstance(obj, nn.Module) else type(obj).__name__
    if isinstance(obj, (str, os.PathLike)):
        label = Path(obj).suffix.lstrip(".") or "file"
    return SizeReport(label, len(data), len(_gzip.compress(data, compresslevel=9, mtime=0)))


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the size of the weights file."""
    return serialized_size(check_module(model, "model")).bytes


# --------------------------------------------------------------------------- parameters
@dataclass
class ParamReport:
    """Parameter and non-zero counts, in total and per tensor."""

    total: int
    nonzero: int
    per_tensor: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzero / self.total if self.total else 0.0

    def table(self) -> Table:
        return Table(self.per_tensor, title="parameters")

    def __str__(self) -> str:
        return (f"{self.table()}\ntotal {self.total:,} parameters, {self.nonzero:,} non-zero "
                f"(sparsity {self.sparsity:.2%})")


def _named_weights(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    # Parameters as the model computes with them: a pruned weight (weight_orig
    # plus weight_mask, as torch.nn.utils.prune leaves it) counts as `weight`.
    # A parameter shared by several modules (tied embedding and output layer) counts once.
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("_orig") and hasattr(mod, pname[: -len("_orig")]):
                base = pname[: -len("_orig")]
                yield (f"{mod_name}.{base}" if mod_name else base), getattr(mod, base).detach()
            else:
                yield (f"{mod_name}.{pname}" if mod_name else pname), p.detach()


def count_parameters(model: nn.Module) -> ParamReport:
    """Count parameters and exact non-zeros of ``model`` (masks of pruned layers applied)."""
    check_module(model, "model")
    rows, total, nonzero = [], 0, 0
    for name, w in _named_weights(model):
        n, nz = w.numel(), int(torch.count_nonzero(w))
        rows.append({"tensor": name, "shape": tuple(w.shape), "params": n, "nonzero": nz})
        total, nonzero = total + n, nonzero + nz
    return ParamReport(total, nonzero, rows)


# --------------------------------------------------------------------------- FLOPs
@dataclass
class FlopReport:
    """Multiply-accumulates of one forward pass; FLOPs = 2 x MACs."""

    macs: int
    per_layer: list[dict[str, Any]] = field(default_factory=list)
    batch_size: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def table(self) -> Table:
        return Table(self.per_layer, title=f"MACs per layer (batch {self.batch_size})")

    def __str__(self) -> str:
        return (f"{self.table()}\ntotal {self.macs:,} MACs = {self.flops:,} FLOPs "
                f"for a batch of {self.batch_size}")


def _rnn_macs(mod: nn.Module, inputs: tuple) -> int:
    """Analytic MACs of a (possibly quantized) RNN/LSTM/GRU: gates x (input + hidden) per step,
    plus the projection of an LSTM with ``proj_size``."""
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # total time steps summed over the batch
        batch = 1
    else:
        seq_dim = 1 if mod.batch_first else 0
        steps = x.shape[seq_dim] if x.dim() == 3 else x.shape[0]
        batch = x.shape[1 - seq_dim] if x.dim() == 3 else 1
    gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    dirs = 2 if mod.bidirectional else 1
    h = mod.hidden_size
    proj = getattr(mod, "proj_size", 0) or 0
    out = proj or h                      # what the next step and the next layer see
    macs = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out * dirs
        macs += dirs * (gates * h * (in_size + out) + h * proj)
    return macs * steps * batch


def _is_recurrent(mod: nn.Module) -> bool:
    # nn.RNN/LSTM/GRU and torch.ao's dynamically quantized copies (not nn.RNNBase subclasses)
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as DynamicRNNBase

    return isinstance(mod, (nn.RNNBase, DynamicRNNBase))


def _quantized_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for torch.ao's int8 kernels, which FlopCounterMode does not know.

    Each gets the raw arguments and the output; weights come from the packed parameters.
    """
    def linear(x, packed, *args, out_val=None, **kwargs) -> int:
        w = packed.unpack()[0]
        return 2 * (out_val.numel() // w.shape[0]) * w.shape[0] * w.shape[1]

    def conv(x, packed, *args, out_val=None, **kwargs) -> int:
        w = packed.weight() if hasattr(packed, "weight") else packed.unpack()[0]
        per_output = w[0].numel()        # (in_channels / groups) x kernel elements
        return 2 * out_val.numel() * per_output

    for f in (linear, conv):
        f._get_raw = True
    ops: dict[Any, Callable[..., int]] = {}
    q = torch.ops.quantized
    for name in ("linear", "linear_relu", "linear_dynamic", "linear_relu_dynamic",
                 "linear_dynamic_fp16"):
        if hasattr(q, name):
            ops[getattr(q, name)] = linear
    for name in ("conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu"):
        if hasattr(q, name):
            ops[getattr(q, name)] = conv
    return ops


def _sdpa_cpu_formula() -> dict[Any, Callable[..., int]]:
    """The fused CPU attention kernel, which FlopCounterMode misses (its formula covers the
    CUDA kernels only): Q K^T and the weighted sum of V, 2 x B x H x Lq x Lk x d each."""
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)
    return {op: flops}


def count_flops(model: nn.Module, example_input: torch.Tensor | tuple) -> FlopReport:
    """Count the multiply-accumulates of one forward pass, operator by operator.

    Built on :class:`torch.utils.flop_counter.FlopCounterMode`, which sees
    every matrix product PyTorch runs: layers, functional code such as
    ``scaled_dot_product_attention`` or ``x @ w`` in ``forward``, transposed
    convolutions, and (with formulas added here) torch.ao's int8 kernels and
    the fused CPU attention kernel. Recurrent layers (RNN/LSTM/GRU, float or
    dynamically quantized) run fused kernels that hide their products, so
    they are counted analytically (``proj_size`` included). Elementwise work
    (activations, normalization, pooling, softmax) is not counted: it is
    small next to the matrix products for the models of this book.

    Args:
        model: run once in eval mode on ``example_input`` (mode restored after).
        example_input: a tensor, or a tuple of positional inputs.

    Returns:
        A :class:`FlopReport`: the total and one row per module that runs
        products itself; products written in a module's own ``forward``
        (functional attention, say) appear on that module's row.
    """
    from torch.utils.flop_counter import FlopCounterMode

    check_module(model, "model")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError("example_input must be a tensor or a tuple of tensors")
    names = {mod: name for name, mod in model.named_modules(remove_duplicate=True)}
    recurrent = {m for m in names if _is_recurrent(m)}
    inside_rnn = {id(sub) for m in recurrent for sub in m.modules() if sub is not m}
    shapes: dict[str, Any] = {}
    rnn_macs: dict[str, int] = {}

    def hook(mod, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        name = names[mod]
        shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else "-"
        if mod in recurrent:
            rnn_macs[name] = rnn_macs.get(name, 0) + _rnn_macs(mod, inputs)

    handles = [m.register_forward_hook(hook) for m in names]
    counter = FlopCounterMode(display=False,
                              custom_mapping={**_quantized_formulas(), **_sdpa_cpu_formula()})
    # nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in inference
    # whose kernel has no formula; the plain path does the same products, op by op.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), evaluating(model), counter:
            model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
    # FlopCounterMode names modules "<RootClass>.<fqn>" and adds each op to every ancestor:
    # a module's own products are its count minus its children's.
    root = type(model).__name__
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}

    def total(name: str) -> int:
        return counts.get(f"{root}.{name}" if name else root, 0)

    rows: list[dict[str, Any]] = []
    for mod, name in names.items():
        if id(mod) in inside_rnn:
            continue
        if mod in recurrent:
            macs = rnn_macs.get(name, 0)
        else:
            own = total(name) - sum(total(f"{name}.{c}" if name else c)
                                    for c, _ in mod.named_children())
            macs = own // 2
        if macs > 0:
            rows.append({"layer": name or "(model)", "type": type(mod).__name__,
                         "macs": int(macs), "output": shapes.get(name, "-")})
    batch = int(args[0].shape[0]) if args[0].dim() > 1 else 1
    return FlopReport(sum(r["macs"] for r in rows), rows, batch)


# --------------------------------------------------------------------------- latency
@dataclass
class LatencyReport:
    """Timing of repeated calls: median and spread in milliseconds, and the setting."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    threads: int
    device: str
    batch_size: int | None = None

    @property
    def throughput(self) -> float:
        """Items per second at the median latency (needs ``batch_size``)."""
        if not self.batch_size:
            return float("nan")
        return self.batch_size / (self.median_ms / 1000)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        batch = f", batch {self.batch_size}" if self.batch_size else ""
        return (f"median {self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"over {self.runs} runs after {self.warmup} warm-up, {self.device}, "
                f"{self.threads} thread(s){batch}")


def _quantile(sorted_vals: list[float], q: float) -> float:
    idx = q * (len(sorted_vals) - 1)
    lo, hi = int(idx), min(int(idx) + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (idx - lo)


def measure_latency(model: nn.Module | Callable[[], Any], example_input: Any = None, *,
                    warmup: int = 10, repeats: int = 50, threads: int | None = 1,
                    device: torch.device | str | None = None) -> LatencyReport:
    """Median wall-clock latency of ``model(example_input)`` (or of ``model()``).

    The model runs in eval mode under ``torch.inference_mode`` (the mode of
    each submodule is restored afterwards); on CUDA the
    device is synchronized around each run. ``threads`` sets PyTorch's
    intra-op thread count for the measurement only (restored afterwards).

    Args:
        model: an ``nn.Module`` called on ``example_input``, or any zero-argument
            callable (an ONNX Runtime or LiteRT run, say) when ``example_input``
            is None.
        example_input: a tensor or a tuple of tensors, moved to ``device``.
        warmup: untimed calls first (caches, lazy initialisation, JIT).
        repeats: timed calls; the report gives their median and 10/90 percentiles.
        threads: PyTorch intra-op threads during the measurement (default 1, for the
            reason given in :func:`compare_latency`; ``None`` keeps the current count).
            To compare variants, use :func:`compare_latency`, which interleaves them.
        device: where a module and its input run (default: the module's device).
    """
    warmup = check_int(warmup, "warmup", min_value=0)
    repeats = check_int(repeats, "repeats", min_value=1)
    if threads is not None:
        threads = check_int(threads, "threads", min_value=1)
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
    batch = None
    if isinstance(model, nn.Module):
        if example_input is None:
            raise ValueError("example_input is required when model is an nn.Module")
        dev = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), torch.device("cpu"))
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        args = tuple(a.to(dev) if isinstance(a, torch.Tensor) else a for a in args)
        first = args[0]
        batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else None
        mode = evaluating(model)

        def call() -> Any:
            with torch.inference_mode():
                return model(*args)
    else:
        if example_input is not None:
            raise ValueError("pass example_input only with an nn.Module; wrap other "
                             "callables in a zero-argument function")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        call, mode = model, contextlib.nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    with mode:
        try:
            for _ in range(warmup):
                call()
            sync()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                sync()
                times.append((time.perf_counter() - t0) * 1000)
            used_threads = torch.get_num_threads()
        finally:
            torch.set_num_threads(old_threads)
    times.sort()
    return LatencyReport(statistics.median(times), _quantile(times, 0.1), _quantile(times, 0.9),
                         repeats, warmup, used_threads, str(dev), batch)


# --------------------------------------------------------------------------- the machine
# Environment variables that cap the instruction sets of PyTorch's CPU kernels; the
# book's `make test-avx2` sets all four to imitate a CPU without AVX-512 or VNNI.
ISA_LIMIT_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS",
                       "MKL_ENABLE_INSTRUCTIONS")
_NO_VNNI_ONEDNN = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}      # oneDNN caps below VNNI
_NO_VNNI_FBGEMM = {"AVX2", "AVX512", "AVX512_256"}             # fbgemm caps below VNNI (E1)


def _cpu_flags() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU", set()
    name, flags = platform.processor() or "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return name, flags


def _torch_cpu_feature(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes; absent on other builds
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means "unknown", i.e. no
        return False


@dataclass
class CPUInfo:
    """What decides the speed of a CPU kernel: instruction sets and threads.

    ``vnni`` and ``amx`` are the instructions that make int8 matrix products
    faster than float32 ones (``vpdpbusd`` on AVX-512 VNNI / AVX-VNNI, tile
    multiplies on AMX); without them an int8 convolution is about as fast as
    a float32 one. Both are *effective* values: a CPU that has VNNI counts as
    without it when an environment variable in :data:`ISA_LIMIT_VARIABLES`
    caps oneDNN or fbgemm below it.
    """

    model_name: str
    capability: str           # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...
    vnni: bool
    amx: bool
    avx512_bf16: bool         # native bfloat16 arithmetic (AVX-512 BF16 or AMX-BF16)
    fp16: bool                # native float16 arithmetic (AVX-512 FP16 or AMX-FP16)
    cores: int                # os.cpu_count()
    threads: int              # PyTorch intra-op threads now
    quantized_engine: str
    limits: dict[str, str] = field(default_factory=dict)  # ISA caps found in the environment

    @property
    def int8_dot_product(self) -> bool:
        """True when int8 GEMM/conv kernels have a dedicated instruction (VNNI or AMX)."""
        return self.vnni or self.amx

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["limits"] = dict(self.limits)
        return row

    def __str__(self) -> str:
        yes = {True: "yes", False: "no"}
        caps = f"; capped by {', '.join(f'{k}={v}' for k, v in self.limits.items())}" \
            if self.limits else ""
        return (f"CPU {self.model_name}: PyTorch kernels {self.capability}, int8 dot product "
                f"(VNNI) {yes[self.vnni]}, AMX {yes[self.amx]}, bf16 {yes[self.avx512_bf16]}, "
                f"fp16 {yes[self.fp16]}; "
                f"{self.cores} cores, {self.threads} PyTorch thread(s){caps}")


def cpu_info() -> CPUInfo:
    """Describe this CPU as PyTorch's kernels see it (print it beside every timing).

    >>> print(cpu_info())  # doctest: +SKIP
    CPU AMD EPYC: PyTorch kernels AVX512, int8 dot product (VNNI) yes, AMX no, ...
    """
    name, flags = _cpu_flags()
    limits = {k: os.environ[k] for k in ISA_LIMIT_VARIABLES if os.environ.get(k)}
    if flags:
        vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
        amx = "amx_int8" in flags
        bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
        fp16 = bool({"avx512_fp16", "amx_fp16"} & flags)
    else:
        vnni = _torch_cpu_feature("_is_vnni_supported")
        amx = _torch_cpu_feature("_is_amx_tile_supported")
        bf16 = _torch_cpu_feature("_is_avx512_bf16_supported")
        fp16 = _torch_cpu_feature("_is_amx_fp16_supported")
    onednn = limits.get("ONEDNN_MAX_CPU_ISA", "").upper()
    fbgemm = limits.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    capped = onednn in _NO_VNNI_ONEDNN or fbgemm in _NO_VNNI_FBGEMM
    if capped:
        vnni = amx = bf16 = fp16 = False
    return CPUInfo(name, torch.backends.cpu.get_cpu_capability(), vnni, amx, bf16, fp16,
                   os.cpu_count() or 1, torch.get_num_threads(),
                   torch.backends.quantized.engine, limits)


# --------------------------------------------------------------------------- comparisons
@dataclass
class LatencyComparison:
    """Several variants timed in interleaved rounds, and their speed against a baseline.

    ``times_ms[name][r]`` is the time of one call of variant ``name`` in round
    ``r``. Because every round runs every variant once, a burst of load from
    another process slows all of them alike, and the per-round ratio
    ``baseline / variant`` is steadier than either time alone.
    """

    baseline: str
    times_ms: dict[str, list[float]]
    threads: int
    device: str
    batch_size: int | None
    cpu: CPUInfo
    _rerun: Callable[[], LatencyComparison] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def names(self) -> list[str]:
        return list(self.times_ms)

    def _check_name(self, name: str) -> str:
        if name not in self.times_ms:
            raise ValueError(f"name must be one of {self.names}, got {name!r}")
        return name

    def median_ms(self, name: str) -> float:
        """Median time of one call of ``name``."""
        return statistics.median(self.times_ms[self._check_name(name)])

    def speedup(self, name: str) -> float:
        """``median(baseline) / median(name)``: above 1 means ``name`` is faster."""
        return self.median_ms(self.baseline) / self.median_ms(name)

    def speedup_spread(self, name: str) -> tuple[float, float]:
        """10th and 90th percentiles of the per-round ratios ``baseline / name``."""
        ratios = sorted(b / v for b, v in zip(self.times_ms[self.baseline],
                                              self.times_ms[self._check_name(name)],
                                              strict=True))
        return _quantile(ratios, 0.1), _quantile(ratios, 0.9)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name, times in self.times_ms.items():
            s = sorted(times)
            lo, hi = self.speedup_spread(name)
            out.append({"variant": name, "median ms": statistics.median(s),
                        "p10 ms": _quantile(s, 0.1), "p90 ms": _quantile(s, 0.9),
                        f"x faster than {self.baseline}": self.speedup(name),
                        "ratio p10-p90": f"{lo:.2f}-{hi:.2f}"})
        return out

    def table(self, title: str | None = None) -> Table:
        batch = f", batch {self.batch_size}" if self.batch_size else ""
        rounds = len(self.times_ms[self.baseline])
        return Table(self.rows(), title=title or (
            f"latency, {self.device}, {self.threads} thread(s){batch}, median of {rounds} "
            f"interleaved rounds"))

    def remeasure(self) -> LatencyComparison:
        """Run the same comparison again (same variants, inputs and settings)."""
        if self._rerun is None:
            raise ValueError("this comparison was not made by compare_latency; cannot remeasure")
        return self._rerun()

    def __str__(self) -> str:
        return f"{self.table()}\n{self.cpu}"

    __repr__ = __str__


def compare_latency(variants: Mapping[str, nn.Module | Callable[[], Any]],
                    example_input: Any = None, *, baseline: str | None = None,
                    rounds: int = 30, warmup: int = 3, threads: int = 1,
                    device: torch.device | str | None = None) -> LatencyComparison:
    """Time several variants of a model in interleaved rounds: A, B, C, A, B, C, ...

    This is the one routine for "x faster" claims. Timing the variants one
    after another lets a burst of load (another job, a thermal change) fall on
    one of them; interleaving spreads it over all, and the order of the
    variants rotates every round so that none always runs first.

    Args:
        variants: name -> an ``nn.Module`` (run in eval mode under
            ``torch.inference_mode`` on ``example_input``) or a zero-argument
            callable (an ONNX Runtime or LiteRT runner, say).
        example_input: a tensor or tuple of tensors for the module variants.
        baseline: the name the speed-ups are relative to (default: the first).
        rounds: timed calls of each variant.
        warmup: untimed calls of each variant first.
        threads: PyTorch intra-op threads during the measurement (restored
            afterwards). The default is 1: on a machine with few cores, a
            second OpenMP thread competes with every other process for the
            same cores and one slow thread stalls the whole operator, which
            made 2-thread timings on a 2-core machine up to 65x slower than
            1-thread ones while anything else ran.
        device: where module variants run (default: each module's device).

    Returns:
        A :class:`LatencyComparison`; ``print`` it for a table with the CPU line.

    Raises:
        ValueError: no variants, an unknown ``baseline``, or a module without
            ``example_input``.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> model or callable")
    names = list(variants)
    for name, v in variants.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"variants: names must be non-empty strings, got {name!r}")
        if not callable(v):
            raise TypeError(f"variants[{name!r}] must be an nn.Module or a callable, "
                            f"got {type(v).__name__}")
    base = names[0] if baseline is None else baseline
    if base not in variants:
        raise ValueError(f"baseline must be one of {names}, got {baseline!r}")
    rounds = check_int(rounds, "rounds", min_value=2)
    warmup = check_int(warmup, "warmup", min_value=0)
    threads = check_int(threads, "threads", min_value=1)
    calls, modes, batch, dev_name = {}, [], None, str(device or "cpu")
    for name, v in variants.items():
        if isinstance(v, nn.Module):
            if example_input is None:
                raise ValueError(f"example_input is required: variants[{name!r}] is a module")
            dev = torch.device(device) if device is not None else next(
                (p.device for p in v.parameters()), torch.device("cpu"))
            dev_name = str(dev)
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            args = tuple(a.to(dev) if isinstance(a, torch.Tensor) else a for a in args)
            if isinstance(args[0], torch.Tensor) and args[0].dim():
                batch = int(args[0].shape[0])
            modes.append(evaluating(v))
            calls[name] = functools.partial(_call_inference, v, args)
        else:
            calls[name] = v
    sync = torch.cuda.synchronize if dev_name.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {n: [] for n in names}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with contextlib.ExitStack() as stack:
            for mode in modes:
                stack.enter_context(mode)
            for name in names:
                for _ in range(warmup):
                    calls[name]()
            sync()
            for r in range(rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    t0 = time.perf_counter()
                    calls[name]()
                    sync()
                    times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(old_threads)

    def rerun() -> LatencyComparison:
        return compare_latency(variants, example_input, baseline=base, rounds=rounds,
                               warmup=warmup, threads=threads, device=device)
    info = cpu_info()
    info.threads = threads
    return LatencyComparison(base, times, threads, dev_name, batch, info, rerun)


def _call_inference(model: nn.Module, args: tuple) -> Any:
    with torch.inference_mode():
        return model(*args)


def assert_timing(comparison: LatencyComparison,
                  condition: Callable[[LatencyComparison], bool], message: str, *,
                  retries: int = 1) -> LatencyComparison:
    """Assert a claim about timings, re-measuring before failing.

    A single slow round of another process can push one measurement across a
    threshold; a claim that is true of the machine survives a second,
    independent measurement. ``condition`` is tried on ``comparison``, then on
    up to ``retries`` fresh re-measurements.

    Returns:
        The comparison on which the condition held (print it if it changed).

    Raises:
        AssertionError: ``message`` and the speed-ups of every attempt.
    """
    if not isinstance(comparison, LatencyComparison):
        raise TypeError(f"comparison must be a LatencyComparison, got "
                        f"{type(comparison).__name__}")
    if not callable(condition):
        raise TypeError(f"condition must be callable, got {type(condition).__name__}")
    retries = check_int(retries, "retries", min_value=0)
    seen = []
    for attempt in range(retries + 1):
        if attempt:
            comparison = comparison.remeasure()
        if condition(comparison):
            return comparison
        seen.append({n: round(comparison.speedup(n), 3) for n in comparison.names})
    raise AssertionError(f"{message} (not true in {retries + 1} measurement(s); speed-ups "
                         f"against {comparison.baseline}: {seen}; {comparison.cpu})")


# --------------------------------------------------------------------------- profiles
@contextlib.contextmanager
def _silenced_fd(fd: int):
    """Send what C/C++ code writes to file descriptor ``fd`` to /dev/null for the block."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def profile_operators(model: nn.Module, example_input: Any, *, runs: int = 10,
                      warmup: int = 3, threads: int = 1, top: int = 8) -> Table:
    """Where a forward pass spends its time, operator by operator (PyTorch's profiler).

    Use it before optimizing: the slow operator is often not the one with the
    most arithmetic (in a small CNN on a CPU it can be ``max_pool2d`` on a
    channels-first tensor). Times are self times (an operator's own time,
    without the operators it calls), averaged over ``runs`` forward passes in
    eval mode under ``torch.inference_mode``.

    Returns:
        A :class:`Table`: operator, calls per forward, ms per forward, share of the total.
    """
    check_module(model, "model")
    runs = check_int(runs, "runs", min_value=1)
    warmup = check_int(warmup, "warmup", min_value=0)
    threads = check_int(threads, "threads", min_value=1)
    top = check_int(top, "top", min_value=1)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError("example_input must be a tensor or a tuple of tensors")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with evaluating(model), torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            with _silenced_fd(2), torch.autograd.profiler.profile(use_kineto=False) as prof:
                for _ in range(runs):       # (the profiler's C++ side logs to stderr)
                    model(*args)
    finally:
        torch.set_num_threads(old)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"operator": e.key, "calls": e.count // runs,
             "ms per forward": e.self_cpu_time_total / 1000 / runs,
             "share (%)": 100 * e.self_cpu_time_total / total}
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]]
    return Table(rows, title=f"operators by self time, {threads} thread(s), mean of {runs} "
                             f"forward passes ({total / 1000 / runs:.3g} ms each)")
