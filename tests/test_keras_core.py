"""Tests of companion.keras.core (tiny data, one epoch: they check wiring, not accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

core = pytest.importorskip("companion.keras.core")


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    y = (x[:, :14].mean(axis=(1, 2, 3)) > x[:, 14:].mean(axis=(1, 2, 3))).astype(np.int64)
    model = core.mnist_keras_model("cnn")
    core.fit_keras_(model, x, y, epochs=1, batch_size=32)
    return model, x, y


def test_models_shapes():
    assert core.mnist_keras_model("cnn").output_shape == (None, 10)
    mlp = core.mnist_keras_model("mlp")
    assert mlp.input_shape == (None, 784) and mlp.count_params() == 784 * 128 + 128 + 1290
    with pytest.raises(ValueError, match="kind"):
        core.mnist_keras_model("rnn")


def test_conversions_size_and_agreement(trained):
    model, x, y = trained
    ref = model.predict(x[:64], verbose=0)
    sizes = {}
    for mode in ("float", "dynamic", "int8"):
        b = core.convert_to_tflite(model, mode, representative_data=x)
        sizes[mode] = len(b)
        out = core.tflite_predict(b, x[:64])
        assert out.shape == (64, 10) and out.dtype == np.float32
        agree = (out.argmax(1) == ref.argmax(1)).mean()
        assert agree >= (0.999 if mode == "float" else 0.9)
        assert 0.0 <= core.tflite_accuracy(b, x[:64], y[:64]) <= 1.0
    inp, _ = core.tflite_io(core.convert_to_tflite(model, "int8", representative_data=x))
    assert inp["dtype"] == np.int8
    assert sizes["float"] / sizes["int8"] > 3 and sizes["float"] / sizes["dynamic"] > 3


def test_predict_feeds_any_batch_and_dtype(trained):
    model, x, _ = trained
    b = core.convert_to_tflite(model, "float")
    a = core.tflite_predict(b, x[:5].astype(np.float64), batch_size=2)  # float64, odd batch
    assert np.allclose(a, core.tflite_predict(b, x[:5]), atol=1e-6)
    core.tflite_callable(b, x[:8])()


def test_bad_input(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="representative_data"):
        core.convert_to_tflite(model, "int8")
    with pytest.raises(ValueError, match="mode"):
        core.convert_to_tflite(model, "int4")
    b = core.convert_to_tflite(model, "float")
    with pytest.raises(ValueError, match="shape"):
        core.tflite_predict(b, x.reshape(len(x), -1))
    with pytest.raises(TypeError, match="tflite_bytes"):
        core.tflite_predict("model.tflite", x)
    with pytest.raises(ValueError, match="length"):
        core.fit_keras_(model, x, y[:3], epochs=1)
    with pytest.raises(TypeError, match="model"):
        core.fit_keras_("m", x, y, epochs=1)
