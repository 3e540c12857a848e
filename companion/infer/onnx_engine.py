"""ONNX export, ONNX Runtime sessions and runners, and static int8 quantization of
an ONNX model with ``onnxruntime.quantization``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import (
    CALIBRATION_BATCHES,
    check_int,
    check_module,
    quiet_loggers,
    run_calibration,
)
from ..train import evaluate
from .engines import _check_input, eval_copy

#: Loggers of the ONNX tool chain silenced below ERROR during export and quantization.
_ONNX_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir", "onnxruntime")


class _DropOnnxRuntimeRecords(logging.Filter):
    """Drops the records ``onnxruntime.quantization`` logs on the root logger below ERROR
    (``logging.warning("Axis 1 is out-of-range for weight ...")`` for every LayerNorm
    weight it quantizes per channel, which it then quantizes per tensor)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_ort = "onnxruntime" in record.pathname.replace("\\", "/").split("/")
        return record.levelno >= logging.ERROR or not from_ort


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """Silence the ONNX tool chain's notices for the block, at their source.

    The exporter logs one warning per torchvision op it cannot register and
    some deprecation notices; onnxscript's constant folding logs "Evaluation
    failed: ..." for each node its reference evaluator cannot fold (the node
    is then kept as it is: a BERT's attention-mask ``Reshape``, say);
    ``onnxruntime.quantization`` warns on the root logger. None concerns the
    result. Errors still show; the loggers' levels and the root logger's
    handlers are restored afterwards (a root logger without handlers gets a
    ``NullHandler`` meanwhile, so that ``logging.warning`` does not install a
    stderr handler for the rest of the session).
    """
    root = logging.getLogger()
    drop = _DropOnnxRuntimeRecords()
    placeholder = logging.NullHandler() if not root.handlers else None
    root.addFilter(drop)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        with quiet_loggers(*_ONNX_LOGGERS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)
        if placeholder is not None:
            root.removeHandler(placeholder)


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


def quantize_onnx_int8(onnx_bytes: bytes, calibration: Iterable, *,
                       num_batches: int | None = CALIBRATION_BATCHES, batch_size: int = 32,
                       per_channel: bool = True) -> bytes:
    """Static int8 quantization of an ONNX model with ONNX Runtime's tools.

    Weights become int8 (per output channel by default), activations are
    quantized with ranges calibrated (min/max) on ``calibration``, in the QDQ
    format that ONNX Runtime's CPU provider fuses into integer kernels.

    Args:
        onnx_bytes: a float32 model from :func:`export_onnx`.
        calibration: batches of ``(inputs, labels)`` or of inputs, as
            everywhere in the library (a DataLoader, or ``[x]`` for one tensor
            ``x`` of a few hundred representative inputs); the inputs are cast
            to the dtype of the model's input (float32 images, int64 token ids).
        num_batches: use the first this many batches (default
            ``CALIBRATION_BATCHES``, 8; ``None``: all).
        batch_size: the batch size ONNX Runtime calibrates at (the inputs are
            re-batched; a last, short batch is dropped).
        per_channel: one weight scale per output channel.

    Returns:
        The quantized model's bytes.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not isinstance(onnx_bytes, (bytes, bytearray)):
        raise TypeError(f"onnx_bytes must be bytes, got {type(onnx_bytes).__name__}")
    inputs: list[np.ndarray] = []
    run_calibration(lambda x, *rest: inputs.append(x.detach().cpu().numpy()), calibration,
                    num_batches)
    if inputs[0].ndim < 2:
        raise ValueError("calibration must yield batches of inputs, shape (N, ...), got "
                         f"shape {inputs[0].shape}")
    arr = np.concatenate(inputs)
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
    """Top-1 accuracy of any NumPy ``predict(batch) -> logits`` over ``(x, y)``:
    :func:`companion.train.evaluate` on batches of ``batch_size``, given to
    ``predict`` as NumPy arrays."""
    if not callable(predict):
        raise TypeError("predict must be callable")
    xa = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ya = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(xa) != len(ya) or len(xa) == 0:
        raise ValueError(f"x and y must be non-empty and equally long, got {len(xa)}, {len(ya)}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    batches = [(torch.from_numpy(xa[i:i + batch_size]), torch.from_numpy(ya[i:i + batch_size]))
               for i in range(0, len(xa), batch_size)]
    return evaluate(lambda xb: np.asarray(predict(xb.numpy())), batches)
