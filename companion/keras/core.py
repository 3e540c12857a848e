"""Keras 3 MNIST models, training, conversion to ``.tflite`` and running it with LiteRT.

Conversion modes (:func:`convert_to_tflite`):

* ``"float"``: float32 weights and compute;
* ``"dynamic"``: dynamic-range quantization: int8 weights, float activations
  quantized on the fly inside the kernels;
* ``"int8"``: full-integer quantization: int8 weights *and* activations, with
  activation ranges calibrated on a representative dataset; the model's
  input and output are int8 too.

:func:`tflite_predict` runs a ``.tflite`` model with ``ai_edge_litert``'s
Interpreter and feeds inputs the way the model declares them: its dtype
(quantizing float inputs with the input's scale and zero point for int8
models) and its batch shape (resizing the input tensor to the batch).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from .._checks import check_choice, check_int, quiet_loggers, silenced_fd

# TensorFlow's C++ start-up notices (oneDNN options, absl's "log messages before
# InitializeLog") are written to stderr while it loads; they say nothing to a reader.
with silenced_fd(2):
    import keras
    import tensorflow as tf

__all__ = ["mnist_keras_model", "fit_keras_", "convert_to_tflite", "tflite_predict",
           "tflite_accuracy", "tflite_io", "tflite_callable"]


def mnist_keras_model(kind: str = "cnn") -> keras.Model:
    """The source articles' Keras MNIST models, compiled, ending in softmax.

    Args:
        kind: ``"cnn"`` (conv 32 - pool - conv 64 - pool - dense 64 - dropout -
            dense 10, input ``(28, 28, 1)``) or ``"mlp"`` (dense 128 - dense 10,
            input ``(784,)``).

    Raises:
        ValueError: unknown ``kind``.
    """
    check_choice(kind, "kind", ("cnn", "mlp"))
    layers = keras.layers
    if kind == "cnn":
        model = keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense1"),
            layers.Dropout(0.5, name="dropout1"),
            layers.Dense(10, activation="softmax", name="dense2"),
        ], name="mnist_cnn")
    else:
        model = keras.Sequential([
            keras.Input(shape=(784,)),
            layers.Dense(128, activation="relu", name="dense1"),
            layers.Dense(10, activation="softmax", name="dense2"),
        ], name="mnist_mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit_keras_(model: keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int,
               batch_size: int = 64, validation_data: tuple | None = None, seed: int = 0,
               verbose: int = 0) -> keras.callbacks.History:
    """Train a compiled Keras model in place with a fixed seed
    (``keras.utils.set_random_seed``); return Keras' ``History``.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: ``x`` and ``y`` differ in length, or bad ``epochs``/``batch_size``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    epochs = check_int(epochs, "epochs", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    keras.utils.set_random_seed(check_int(seed, "seed", min_value=0))
    return model.fit(x, y, epochs=epochs, batch_size=batch_size,
                     validation_data=validation_data, verbose=verbose)


def convert_to_tflite(model: keras.Model, mode: str = "float",
                      representative_data: np.ndarray | Iterable | None = None,
                      num_calibration: int = 200) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer.

    Args:
        model: a built Keras model.
        mode: ``"float"``, ``"dynamic"`` (int8 weights) or ``"int8"`` (full integer).
        representative_data: inputs for calibrating activation ranges (needed by
            ``"int8"``): an array whose first ``num_calibration`` rows are used.
        num_calibration: rows of ``representative_data`` fed one at a time.

    Returns:
        The flatbuffer bytes (their length is the model's file size).

    Raises:
        ValueError: unknown ``mode``, or ``"int8"`` without ``representative_data``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    check_choice(mode, "mode", ("float", "dynamic", "int8"))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if representative_data is None:
            raise ValueError("representative_data is required for mode='int8'")
        rows = np.asarray(representative_data, dtype=np.float32)[:num_calibration]

        def representative():
            for row in rows:
                yield [row[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # the converter prints its temporary paths, and warns that int8 inputs have no
    # statistics (their scale and zero point come from the representative data)
    # (and its C++ side logs options and "Ignored output_format" to stderr)
    # (and TensorFlow's logger "Assets written to ...")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
            silenced_fd(2), quiet_loggers("tensorflow"):
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def _interpreter(tflite_bytes: bytes, num_threads: int = 1):
    """An allocated LiteRT interpreter; its one-time "Created TensorFlow Lite XNNPACK
    delegate" notice, written to stderr by its C++ side, is not shown."""
    from ai_edge_litert.interpreter import Interpreter
    if not isinstance(tflite_bytes, (bytes, bytearray)):
        raise TypeError(f"tflite_bytes must be bytes, got {type(tflite_bytes).__name__}")
    with silenced_fd(2):
        interp = Interpreter(model_content=bytes(tflite_bytes), num_threads=num_threads)
        interp.allocate_tensors()
    return interp


def tflite_io(tflite_bytes: bytes) -> tuple[dict, dict]:
    """The input and output details (shape, dtype, quantization) of a ``.tflite`` model."""
    interp = _interpreter(tflite_bytes)
    return interp.get_input_details()[0], interp.get_output_details()[0]


def tflite_predict(tflite_bytes: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run a ``.tflite`` model on ``x`` and return float32 outputs.

    ``x`` is cast (or, for an int8 input, quantized with the input's scale
    and zero point) to the model's input dtype and fed in batches, the
    input tensor resized to each batch; int8 outputs are dequantized.

    Args:
        tflite_bytes: from :func:`convert_to_tflite`.
        x: inputs shaped like the model's input without its batch dimension,
            plus a leading batch dimension.
        batch_size: rows per invocation.

    Raises:
        ValueError: ``x``'s per-example shape does not match the model's input.
    """
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    interp = _interpreter(tflite_bytes)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.asarray(x)
    if tuple(x.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"x has per-example shape {tuple(x.shape[1:])}, the model expects "
                         f"{tuple(inp['shape'][1:])}")
    results = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            xb = np.clip(np.round(xb / scale + zero), -128, 127)
        interp.resize_tensor_input(inp["index"], [len(xb), *inp["shape"][1:]])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], xb.astype(inp["dtype"]))
        interp.invoke()
        yb = interp.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            yb = (yb.astype(np.float32) - zero) * scale
        results.append(yb.astype(np.float32))
    return np.concatenate(results)


def tflite_accuracy(tflite_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1] of a ``.tflite`` classifier on ``(x, y)``: the
    library's one accuracy, :func:`companion.train.evaluate`, of its predictions."""
    from ..train import evaluate

    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    batch = (torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)))   # copies: writable
    return evaluate(lambda b: tflite_predict(tflite_bytes, b.numpy()), [batch])


def tflite_callable(tflite_bytes: bytes, x: np.ndarray, num_threads: int = 1):
    """A zero-argument function that runs the model once on the batch ``x``.

    For timing with :func:`companion.measure.measure_latency`: the
    interpreter is built, resized to ``x``'s batch and fed once, outside the
    timed call (``x`` is quantized first for an int8 input).
    """
    num_threads = check_int(num_threads, "num_threads", min_value=1)
    interp = _interpreter(tflite_bytes, num_threads)
    inp = interp.get_input_details()[0]
    x = np.asarray(x)
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127)
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    return interp.invoke
