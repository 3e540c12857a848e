"""Inference engines that run on this machine, measured on the same model and inputs.

Article 002 teaches inference optimization with TensorRT code that calls
functions TensorRT does not have, on a GPU most readers do not own. This
module gives the engines that run on a CPU here, each as a *zero-argument
callable* that :func:`companion.measure.measure_latency` can time:

* eager PyTorch (:func:`eager_runner`);
* ``torch.compile`` with the inductor backend (:func:`compile_model`);
* ONNX export (:func:`export_onnx`) run by ONNX Runtime, in float32 and after
  int8 static quantization with ``onnxruntime.quantization``
  (:func:`quantize_onnx_int8`, :func:`ort_session`, :func:`ort_runner`);

plus :func:`engine_row`, which measures latency, size and accuracy of one
engine in one setting, and a roofline model (:func:`measure_peak_flops`,
:func:`measure_bandwidth`, :func:`roofline`) that explains why small batches
are latency-bound.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_float, check_int, check_module, check_tensor, evaluating
from ._checks import is_exported as _is_exported
from .measure import LatencyComparison, compare_latency, measure_latency
from .train import clone

__all__ = [
    "Fp32Baseline",
    "fold_batchnorm",
    "fastest_fp32",
    "is_exported",
    "eval_copy",
    "EngineRow",
    "Roofline",
    "eager_runner",
    "compile_model",
    "export_onnx",
    "quantize_onnx_int8",
    "ort_session",
    "ort_runner",
    "ort_predict",
    "accuracy_of",
    "engine_row",
    "measure_peak_flops",
    "measure_bandwidth",
    "roofline",
    "model_bytes_moved",
]


# --------------------------------------------------------------------------- fp32 baseline
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each BatchNorm folded into the conv before it.

    In eval mode ``BN(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(v + eps)`` and
    ``b' = (b - m) * g / sqrt(v + eps) + beta`` per output channel, so the
    normalization costs nothing at inference. Uses ``torch.fx`` (the model
    must be symbolically traceable); the result computes the same function
    to float rounding.

    Raises:
        ValueError: the model cannot be traced by ``torch.fx``.
    """
    from torch.fx.experimental.optimization import fuse

    check_module(model, "model")
    if is_exported(model):
        raise ValueError("model: cannot fold batch norm in a torch.export program "
                         "(its graph is fixed); fold before exporting")
    copy = clone(model).eval()
    try:
        return fuse(copy, inplace=True)
    except Exception as err:  # noqa: BLE001 - tracing errors come in many types
        raise ValueError(f"model: cannot fold batch norm, torch.fx could not trace it "
                         f"({type(err).__name__}: {err})") from err


@dataclass
class Fp32Baseline:
    """The fastest plain float32 way to run a model here, and the comparison that chose it."""

    name: str
    model: nn.Module
    comparison: LatencyComparison

    def __str__(self) -> str:
        return f"fastest plain fp32: {self.name}\n{self.comparison}"


def fastest_fp32(model: nn.Module, example_input: torch.Tensor, *, threads: int = 1,
                 rounds: int = 20) -> Fp32Baseline:
    """Find the fastest plain float32 way to run ``model``: the baseline of a speed-up.

    A speed-up of int8 or of a pruned model means little against a slow
    float32 path. In eager PyTorch on a CPU the slow parts of a small CNN are
    often not the convolutions: ``max_pool2d`` on a channels-first (NCHW)
    tensor is not vectorized across channels and can take longer than the
    convolution before it, and an unfolded BatchNorm is one more pass over
    the activations. The candidates, timed in interleaved rounds under
    ``torch.inference_mode``, are the model as given, BatchNorm folded into
    the convolutions (:func:`fold_batchnorm`), channels-last memory format
    (4-D inputs only), and both. Engines that need a compiler or another
    runtime (``torch.compile``, ONNX Runtime) are not "plain" and are
    compared separately (section 3.3).

    A module from ``torch.export`` (``ExportedProgram.module()``) cannot be
    switched to eval mode (its mode was fixed when it was exported): it is
    timed as it is, with channels-last as the only other candidate.

    Args:
        model: left unchanged; the candidates are copies in eval mode.
        example_input: a batch as the model will see it (float, or integer
            token ids).
        threads: PyTorch threads for the timing (default 1).
        rounds: interleaved rounds of :func:`companion.measure.compare_latency`.

    Returns:
        An :class:`Fp32Baseline`: the winner's name, the model to time and the comparison.
    """
    check_module(model, "model")
    x = _check_input(example_input, "example_input")
    exported = is_exported(model)
    candidates: dict[str, nn.Module] = {"eager": eval_copy(model)}
    if not exported and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for m in model.modules()):
        with contextlib.suppress(ValueError):       # not traceable: no folded candidate
            candidates["BN folded"] = fold_batchnorm(model)
    if x.dim() == 4 and x.is_floating_point():
        for name in list(candidates):
            label = "channels-last" if name == "eager" else f"{name} + channels-last"
            candidates[label] = _copy(candidates[name]).to(memory_format=torch.channels_last)
    cmp = compare_latency(candidates, x, threads=threads, rounds=rounds)
    best = min(cmp.names, key=cmp.median_ms)
    return Fp32Baseline(best, candidates[best], cmp)


def is_exported(model: nn.Module) -> bool:
    """Whether ``model`` came from ``torch.export`` (``ExportedProgram.module()``).

    Such a module runs like any other but refuses ``.train()`` and ``.eval()``
    (``NotImplementedError``): its train/eval behaviour was fixed when it was
    exported, so code that switches modes must leave it alone.

    >>> is_exported(torch.nn.Linear(2, 2))
    False

    Raises:
        TypeError: ``model`` is not a module.
    """
    return _is_exported(check_module(model, "model"))


def _copy(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():   # deep-copying an exported module warns about pytrees
        warnings.simplefilter("ignore", FutureWarning)
        return clone(model)


def eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode; the original (and its mode) is untouched.

    A ``torch.export`` module (:func:`is_exported`) is copied as it is: its
    mode cannot be switched and was fixed when it was exported.

    Raises:
        TypeError: ``model`` is not a module.
    """
    copy = _copy(check_module(model, "model"))
    return copy if is_exported(copy) else copy.eval()


# --------------------------------------------------------------------------- rows
@dataclass
class EngineRow:
    """One engine in one setting: latency (ms), artifact size (bytes), accuracy."""

    engine: str
    batch: int
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    size_bytes: int
    accuracy: float
    device: str = "cpu"

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["images/s"] = self.images_per_s
        return row


# --------------------------------------------------------------------------- engines
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_input(x: Any, name: str = "x") -> torch.Tensor:
    """A batch: floating point, or integer (token ids, say); not bool or complex."""
    x = check_tensor(x, name)
    if not (x.is_floating_point() or x.dtype in _INT_DTYPES):
        raise TypeError(f"{name} must be a floating-point or integer tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension, got shape {tuple(x.shape)}")
    return x


def eager_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``lambda: model(x)`` in eval mode under ``torch.inference_mode``.

    Args:
        model: put in eval mode (the only change made to it; a ``torch.export``
            module, whose mode cannot be switched, is left as it is).
        x: a batch of inputs (float, or integer token ids).

    Returns:
        A zero-argument callable returning the logits.
    """
    check_module(model, "model")
    x = _check_input(x)
    if not is_exported(model):
        model.eval()

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def compile_model(model: nn.Module, *, dynamic: bool = True,
                  mode: str | None = None) -> nn.Module:
    """A ``torch.compile`` d copy of ``model`` in eval mode (the original is untouched).

    Compilation happens lazily on the first call, which is therefore slow
    (seconds to tens of seconds on a CPU): time it separately from the
    steady-state latency.

    Args:
        model: the model to compile (deep-copied first).
        dynamic: compile once for any batch size (symbolic shapes) instead of
            recompiling for each new batch size.
        mode: ``None`` (default), ``"reduce-overhead"`` or ``"max-autotune"``.

    Raises:
        ValueError: unknown ``mode``.
    """
    check_module(model, "model")
    if mode not in (None, "default", "reduce-overhead", "max-autotune"):
        raise ValueError(f"mode must be None, 'default', 'reduce-overhead' or 'max-autotune', "
                         f"got {mode!r}")
    return torch.compile(eval_copy(model), dynamic=dynamic, mode=mode)


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    # The exporter logs one warning per torchvision op it cannot register and
    # some deprecation notices; none concerns these models.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, example_input: torch.Tensor, *,
                dynamic_batch: bool = True) -> bytes:
    """Export ``model`` to ONNX with ``torch.onnx.export(dynamo=True)``; the model bytes.

    Args:
        model: exported in eval mode (a copy is exported; the original is untouched).
            A ``torch.export`` module is exported as it is.
        example_input: a batch with the input's shape and dtype: float, or
            integer token ids (``torch.long``) for a model that starts with an
            embedding; the ONNX input keeps that dtype.
        dynamic_batch: make the batch dimension symbolic, so one file serves
            every batch size.

    Returns:
        The serialized ``ModelProto`` (weights inside), ready for
        ``onnxruntime.InferenceSession``.

    Raises:
        TypeError: ``model`` is not a module, or ``example_input`` is not a
            float or integer tensor.
        ValueError: ``example_input`` has no batch dimension or holds NaN/inf.
    """
    check_module(model, "model")
    x = _check_input(example_input, "example_input")
    if x.shape[0] < 2 and dynamic_batch:
        x = torch.cat([x, x])  # a batch of 1 would be specialised to 1
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with _quiet_onnx():
        program = torch.onnx.export(eval_copy(model), (x,), dynamo=True,
                                    dynamic_shapes=shapes, verbose=False)
    return program.model_proto.SerializeToString()


def ort_session(onnx_bytes: bytes, *, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads.

    Raises:
        TypeError: ``onnx_bytes`` is not bytes.
    """
    import onnxruntime as ort

    if not isinstance(onnx_bytes, (bytes, bytearray)):
        raise TypeError(f"onnx_bytes must be bytes, got {type(onnx_bytes).__name__}")
    if not onnx_bytes:
        raise ValueError("onnx_bytes must not be empty (export a model with export_onnx)")
    threads = check_int(threads, "threads", min_value=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(bytes(onnx_bytes), opts, providers=["CPUExecutionProvider"])


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
               "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _input_dtype(onnx_type: str) -> Any:
    """The NumPy dtype of an ONNX input type string such as ``'tensor(int64)'``."""
    return _ORT_DTYPES.get(onnx_type, np.float32)


def ort_runner(session: Any, x: torch.Tensor | np.ndarray) -> Callable[[], np.ndarray]:
    """A zero-argument callable running ``session`` on the batch ``x``.

    ``x`` is cast to the dtype of the session's first input (float32 images,
    int64 token ids, ...).
    """
    if not hasattr(session, "run") or not hasattr(session, "get_inputs"):
        raise TypeError(f"session must be an onnxruntime.InferenceSession, "
                        f"got {type(session).__name__}")
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    inp = session.get_inputs()[0]
    feed = {inp.name: np.ascontiguousarray(arr, dtype=_input_dtype(inp.type))}

    def run() -> np.ndarray:
        return session.run(None, feed)[0]
    return run


def ort_predict(session: Any, x: torch.Tensor | np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of ``session`` over all of ``x``, in batches of ``batch_size``."""
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if len(arr) == 0:
        raise ValueError("x must not be empty")
    return np.concatenate([ort_runner(session, arr[i:i + batch_size])()
                           for i in range(0, len(arr), batch_size)])


class _ArrayReader:
    """The ``CalibrationDataReader`` protocol of ``onnxruntime.quantization``."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not called by the calibrators used here
        pass


def quantize_onnx_int8(onnx_bytes: bytes, calibration: torch.Tensor | np.ndarray, *,
                       batch_size: int = 32, per_channel: bool = True) -> bytes:
    """Static int8 quantization of an ONNX model with ONNX Runtime's tools.

    Weights become int8 (per output channel by default), activations are
    quantized with ranges calibrated (min/max) on ``calibration``, in the QDQ
    format that ONNX Runtime's CPU provider fuses into integer kernels.

    Args:
        onnx_bytes: a float32 model from :func:`export_onnx`.
        calibration: a few hundred representative inputs (cast to the dtype
            of the model's input: float32 images, int64 token ids, ...).
        batch_size: calibration batch size.
        per_channel: one weight scale per output channel.

    Returns:
        The quantized model's bytes.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not isinstance(onnx_bytes, (bytes, bytearray)):
        raise TypeError(f"onnx_bytes must be bytes, got {type(onnx_bytes).__name__}")
    arr = calibration.detach().cpu().numpy() if isinstance(calibration, torch.Tensor) \
        else np.asarray(calibration)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError("calibration must be a non-empty batch of inputs")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    with tempfile.TemporaryDirectory() as tmp, _quiet_onnx():
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(bytes(onnx_bytes))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph_input = onnx.load(str(pre)).graph.input[0]
        name = graph_input.name
        elem = onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
        arr = np.ascontiguousarray(arr, dtype=elem)
        # calibrate at a fixed batch size (the last, possibly short, batch is dropped)
        batches = [arr[i:i + batch_size] for i in range(0, len(arr) - batch_size + 1, batch_size)]
        batches = batches or [arr]
        quantize_static(str(pre), str(dst), _ArrayReader(name, batches),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def accuracy_of(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray | torch.Tensor,
                y: np.ndarray | torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of any ``predict(batch) -> logits`` over ``(x, y)``."""
    if not callable(predict):
        raise TypeError("predict must be callable")
    xa = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ya = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(xa) != len(ya) or len(xa) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(xa)}, {len(ya)}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    correct = 0
    for i in range(0, len(xa), batch_size):
        logits = np.asarray(predict(xa[i:i + batch_size]))
        correct += int((logits.argmax(1) == ya[i:i + batch_size]).sum())
    return correct / len(xa)


def engine_row(engine: str, runner: Callable[[], Any], *, batch: int, threads: int,
               size_bytes: int, accuracy: float, warmup: int = 5, repeats: int = 30,
               device: str = "cpu") -> EngineRow:
    """Time ``runner`` (median of ``repeats`` after ``warmup``) and build an :class:`EngineRow`.

    ``threads`` is both set for PyTorch during the measurement and recorded;
    engines with their own thread pools (ONNX Runtime, LiteRT) must have been
    created with the same count.
    """
    if not isinstance(engine, str) or not engine:
        raise ValueError("engine must be a non-empty string")
    if not callable(runner):
        raise TypeError(f"runner must be callable, got {type(runner).__name__}")
    batch = check_int(batch, "batch", min_value=1)
    threads = check_int(threads, "threads", min_value=1)
    size_bytes = check_int(size_bytes, "size_bytes", min_value=0)
    accuracy = check_float(accuracy, "accuracy", min_value=0.0, max_value=1.0)
    rep = measure_latency(runner, warmup=warmup, repeats=repeats, threads=threads, device=device)
    return EngineRow(engine, batch, threads, rep.median_ms, rep.p10_ms, rep.p90_ms,
                     size_bytes, accuracy, str(rep.device))


# --------------------------------------------------------------------------- roofline
@dataclass
class Roofline:
    """A roofline estimate: ``max(compute time, memory time)`` for one call."""

    flops: float
    bytes_moved: float
    peak_flops: float
    bandwidth: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes_moved

    @property
    def ridge(self) -> float:
        """The intensity at which compute and memory time are equal."""
        return self.peak_flops / self.bandwidth

    @property
    def bound(self) -> str:
        return "compute" if self.intensity >= self.ridge else "memory"

    @property
    def lower_bound_ms(self) -> float:
        """No implementation can be faster than this on the measured machine."""
        return 1000 * max(self.flops / self.peak_flops, self.bytes_moved / self.bandwidth)


def measure_peak_flops(n: int = 512, *, threads: int = 1, repeats: int = 10,
                       dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Attainable FLOP/s: the best of ``repeats`` timed ``n x n`` matrix products."""
    n = check_int(n, "n", min_value=16)
    threads = check_int(threads, "threads", min_value=1)
    repeats = check_int(repeats, "repeats", min_value=1)
    a = torch.rand(n, n, dtype=dtype, device=device)
    b = torch.rand(n, n, dtype=dtype, device=device)
    best = _best_time(lambda: a @ b, threads, repeats, device)
    return 2 * n ** 3 / best


def measure_bandwidth(mbytes: int = 64, *, threads: int = 1, repeats: int = 10,
                      device: str = "cpu") -> float:
    """Attainable memory bandwidth in bytes/s: best of ``repeats`` copies of ``mbytes`` MiB.

    A copy reads and writes each byte, so it moves ``2 x mbytes`` MiB.
    """
    mbytes = check_int(mbytes, "mbytes", min_value=1)
    threads = check_int(threads, "threads", min_value=1)
    src = torch.rand(mbytes * 2 ** 20 // 4, device=device)
    dst = torch.empty_like(src)
    best = _best_time(lambda: dst.copy_(src), threads, check_int(repeats, "repeats", min_value=1),
                      device)
    return 2 * src.numel() * 4 / best


def _best_time(fn: Callable[[], Any], threads: int, repeats: int, device: str) -> float:
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return min(times)


def roofline(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float) -> Roofline:
    """Build a :class:`Roofline` (all arguments must be positive).

    Args:
        flops: floating-point operations of one call (2 x MACs).
        bytes_moved: bytes read and written by the call (weights + activations).
        peak_flops: attainable FLOP/s (:func:`measure_peak_flops`).
        bandwidth: attainable bytes/s (:func:`measure_bandwidth`).
    """
    for value, name in ((flops, "flops"), (bytes_moved, "bytes_moved"),
                        (peak_flops, "peak_flops"), (bandwidth, "bandwidth")):
        check_float(value, name, min_value=0.0, min_inclusive=False)
    return Roofline(float(flops), float(bytes_moved), float(peak_flops), float(bandwidth))


def model_bytes_moved(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes a forward pass must at least move: parameters + buffers + input + output, once.

    Intermediate activations are assumed to stay in cache (true for the small
    models here); this is a lower bound on memory traffic.
    """
    check_module(model, "model")
    x = _check_input(x)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with torch.no_grad(), evaluating(model):
        out = model(x)
    return int(state + x.numel() * x.element_size() + out.numel() * out.element_size())

