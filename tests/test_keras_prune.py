"""Tests of companion.keras.prune (tiny synthetic data: they check the masks, not accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

kp = pytest.importorskip("companion.keras.prune")
keras = pytest.importorskip("keras")
core = pytest.importorskip("companion.keras.core")


def _data(n=256, d=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x[:, : d // 2].sum(1) > x[:, d // 2:].sum(1)).astype(np.int64)
    return x, y


def _mlp(d=20, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(d,)),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(2, activation="softmax", name="out"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _kernels(model):
    return {layer.name: layer.kernel.numpy().copy()
            for layer in kp.prunable_layers(model)}


def test_polynomial_schedule_matches_formula():
    s_i, s_f, t0, t1 = 0.1, 0.85, 20, 120
    sched = kp.PolynomialDecay(s_i, s_f, begin_step=t0, end_step=t1, frequency=10)
    for t in (20, 30, 45, 70, 100, 119, 120):
        expected = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3
        assert sched(t) == pytest.approx(expected, abs=1e-12)
    assert sched(0) == pytest.approx(s_i) and sched(500) == pytest.approx(s_f)  # clamped
    assert [t for t in range(200) if sched.should_prune(t)] == list(range(20, 121, 10))
    const = kp.ConstantSparsity(0.6, begin_step=5)
    assert const(4) == 0.0 and const(5) == const(99) == 0.6


def test_exact_sparsity_at_end_of_schedule_and_zeros_stay_zero():
    x, y = _data()
    model = _mlp()
    cb = kp.MagnitudePruning(kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16,
                                                frequency=4))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])  # 16 steps
    assert cb.step == 16 and [t for t, _ in cb.log] == [0, 4, 8, 12, 16]
    sparsities = [s for _, s in cb.log]
    assert sparsities == sorted(sparsities)                     # only grows
    report = kp.kernel_sparsity(model)
    for row in report.layers:                                   # exactly round(s * n) zeros
        assert row.zeros == round(0.75 * row.size), row
    assert report.sparsity == pytest.approx(0.75, abs=1e-3)
    zeros = {k: v == 0 for k, v in _kernels(model).items()}
    # more training with the callback: Adam's momentum would move the pruned weights
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    after = _kernels(model)
    for name, z in zeros.items():
        assert np.all(after[name][z] == 0), name                # pruned stay exactly zero
        assert np.count_nonzero(after[name]) == np.count_nonzero(~z)  # the rest stay non-zero
    assert cb.step == 32 and len(cb.log) == 5                   # nothing due after end_step
    # without the callback the optimizer revives them: the re-masking is what keeps them
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert kp.kernel_sparsity(model).sparsity < 0.5


def test_pruning_uses_magnitudes_and_keeps_biases():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = _kernels(model)
    biases = [layer.bias.numpy().copy() for layer in model.layers]
    cb = kp.MagnitudePruning(kp.ConstantSparsity(0.5, begin_step=0), layers=["hidden"])
    cb.set_model(model)
    cb.on_train_begin()                                         # one-shot at step 0
    k = model.get_layer("hidden").kernel.numpy()
    kept = np.abs(before["hidden"][k != 0])
    dropped = np.abs(before["hidden"][k == 0])
    assert kept.min() >= dropped.max()                          # the smallest |w| went
    assert np.array_equal(k[k != 0], before["hidden"][k != 0])  # survivors unchanged
    assert np.array_equal(_kernels(model)["out"], before["out"])  # layer not named: untouched
    for layer, b in zip(model.layers, biases, strict=True):
        assert np.array_equal(layer.bias.numpy(), b)
    assert set(cb.masks) == {"hidden"} and cb.masks["hidden"].mean() == 0.5


def test_caller_model_unchanged_outside_fit():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    cb = kp.MagnitudePruning(kp.ConstantSparsity(0.9))           # constructing touches nothing
    report = kp.kernel_sparsity(model)
    pruned = kp.magnitude_prune(model, 0.9)                      # a pruned copy
    for a, b in zip(model.get_weights(), before, strict=True):
        assert np.array_equal(a, b)
    assert report.sparsity == 0.0 and cb.step == 0
    assert kp.kernel_sparsity(pruned).per_layer == pytest.approx({"hidden": 0.9, "out": 0.9},
                                                                 abs=0.02)
    assert pruned.compiled and np.isfinite(pruned.evaluate(x, y, verbose=0)[0])
    # the documented in-place effect: fit with the callback prunes the caller's model
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    assert kp.kernel_sparsity(model).sparsity == pytest.approx(0.9, abs=0.02)


def test_pruned_model_exports_without_stripping():
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    model = core.mnist_keras_model("cnn")
    pruned = kp.magnitude_prune(model, 0.8, layers=["conv2", "dense1"])
    assert set(kp.kernel_sparsity(pruned).per_layer) == {"conv1", "conv2", "dense1", "dense2"}
    assert kp.kernel_sparsity(pruned, ["conv2", "dense1"]).sparsity == pytest.approx(0.8, 1e-3)
    blob = core.convert_to_tflite(pruned, "float")
    out = core.tflite_predict(blob, x)
    assert np.allclose(out, pruned.predict(x, verbose=0), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="final_sparsity"):
        kp.PolynomialDecay(0.0, 1.0, begin_step=0, end_step=10)
    with pytest.raises(ValueError, match="initial_sparsity"):
        kp.PolynomialDecay(-0.1, 0.5, begin_step=0, end_step=10)
    with pytest.raises(ValueError, match="target_sparsity"):
        kp.ConstantSparsity(1.5)
    with pytest.raises(ValueError, match="end_step"):
        kp.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10)
    with pytest.raises(TypeError, match="schedule"):
        kp.MagnitudePruning(0.5)
    with pytest.raises(TypeError, match="layers"):
        kp.MagnitudePruning(kp.ConstantSparsity(0.5), layers="hidden")
    with pytest.raises(ValueError, match="layers"):
        kp.MagnitudePruning(kp.ConstantSparsity(0.5), layers=[])
    model = _mlp()
    with pytest.raises(ValueError, match="sparsity"):
        kp.magnitude_prune(model, 1.0)
    with pytest.raises(ValueError, match="no layer named"):
        kp.kernel_sparsity(model, ["conv9"])
    with pytest.raises(TypeError, match="model"):
        kp.kernel_sparsity("model")
    x, y = _data()
    cb = kp.MagnitudePruning(kp.ConstantSparsity(0.5), layers=["hidden", "nope"])
    with pytest.raises(ValueError, match="nope"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    no_kernels = keras.Sequential([keras.Input(shape=(4, 4)), keras.layers.Flatten(),
                                   keras.layers.Activation("softmax")])
    with pytest.raises(ValueError, match="no prunable layer"):
        kp.kernel_sparsity(no_kernels)
    no_kernels.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="no prunable layer"):
        no_kernels.fit(np.zeros((4, 4, 4)), np.zeros((4, 16)), verbose=0,
                       callbacks=[kp.MagnitudePruning(kp.ConstantSparsity(0.5))])
    with pytest.raises(ValueError, match="no prunable kernel"):
        kp.magnitude_prune(core.mnist_keras_model("cnn"), 0.5, layers=["pool1"])
