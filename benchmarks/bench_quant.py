"""Quantization benchmark: int8 PyTorch (dynamic / static), LiteRT full-integer, 4-bit QAT vs PTQ.

Prints a table and writes ``benchmarks/results/quant.json``. Every figure is
measured in this run: size = bytes of the serialized artifact, accuracy on
the 10,000 MNIST test images, latency = median of timed runs after warm-up
at batch 64 on the CPU with the stated thread count.

``python benchmarks/bench_quant.py --litert-only`` re-measures the LiteRT rows
(the article's Keras CNN and a Keras copy of SmallCNN) and keeps the others.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from companion import data, measure, models, quant, train

OUT = Path(__file__).parent / "results" / "quant.json"
TRAIN_SIZE, EPOCHS, THREADS, BATCH, RUNS = 20_000, 2, 1, 64, 50
TARGETS = {"size_ratio": 3.9, "max_drop_points": 0.2, "speedup": 1.5, "qat4_within": 0.5}
ANCHORS = {
    "LiteRT post-training quantization guide": "4x smaller, 2-3x faster (int8 vs float)",
    "MNIST post-training quantization codelab": "138.71 KB / 98.62% -> 39.65 KB / 98.61%",
}


def torch_rows(ds) -> list[dict]:
    rows = []
    specs = [("SmallCNN", models.SmallCNN, False), ("LeNet-300-100", models.LeNet300100, True)]
    for name, make, flatten in specs:
        loaders = data.make_loaders(ds, 64, train_size=TRAIN_SIZE, flatten=flatten)
        train.set_seed(0)
        model = make()
        train.fit(model, loaders.train, epochs=EPOCHS, device="cpu", progress=False)
        batch = next(iter(loaders.test))[0][:BATCH]
        variants = {"fp32": model,
                    "dynamic int8": quant.quantize_model(model, quant.DynamicInt8Config()),
                    "static int8": quant.quantize_model(
                        model, quant.StaticInt8Config(loaders.train, num_batches=20))}
        base = None
        for kind, m in variants.items():
            size = measure.serialized_size(m).bytes
            acc = 100 * train.evaluate(m, loaders.test)
            lat = measure.measure_latency(m, batch, threads=THREADS, warmup=10, repeats=RUNS)
            base = base or (size, acc, lat.median_ms)
            rows.append({"engine": "PyTorch", "model": name, "variant": kind, "bytes": size,
                         "x smaller": round(base[0] / size, 3), "acc %": round(acc, 2),
                         "drop pts": round(base[1] - acc, 2),
                         "median ms": round(lat.median_ms, 3),
                         "x faster": round(base[2] / lat.median_ms, 2)})
    return rows


def qat_rows(ds) -> list[dict]:
    loaders = data.make_loaders(ds, 64, train_size=TRAIN_SIZE, flatten=True)
    train.set_seed(0)
    model = models.LeNet300100()
    train.fit(model, loaders.train, epochs=EPOCHS, device="cpu", progress=False)
    fp32 = 100 * train.evaluate(model, loaders.test)
    rows = [{"engine": "PyTorch (simulated 4-bit)", "model": "LeNet-300-100", "variant": "fp32",
             "acc %": round(fp32, 2)}]
    ptq = quant.quantize_model(model, quant.QATConfig(bits=4, momentum=1.0))
    quant.calibrate_fake_quant_(ptq, loaders.train, num_batches=20)
    qat = quant.quantize_model(model, quant.QATConfig(bits=4))
    train.set_seed(0)
    train.fit(qat, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    for kind, m in (("PTQ 4-bit", ptq), ("QAT 4-bit (1 epoch)", qat)):
        acc = 100 * train.evaluate(m, loaders.test)
        rows.append({"engine": "PyTorch (simulated 4-bit)", "model": "LeNet-300-100",
                     "variant": kind, "acc %": round(acc, 2), "drop pts": round(fp32 - acc, 2)})
    quant.convert_qat_(qat)
    rows[-1]["bytes"] = measure.serialized_size(qat).bytes
    rows[-1]["x smaller"] = round(measure.serialized_size(model).bytes / rows[-1]["bytes"], 3)
    return rows


def keras_small_cnn():
    """A Keras copy of ``companion.models.SmallCNN``: the issue's "small CNN" for LiteRT.

    Same layers and widths (conv 32 - BN - pool - conv 64 - BN - pool - dense 128 -
    dense 10), hence the same 421,834 trainable parameters (checked below).
    """
    import keras

    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="small_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    assert trainable == measure.count_parameters(models.SmallCNN()).total == 421_834
    return model


def litert_rows(ds) -> list[dict]:
    from companion.keras import core
    x, y = data.keras_arrays(ds.train.take(TRAIN_SIZE))
    xt, yt = data.keras_arrays(ds.test)
    rows = []
    for name, model in (("Keras CNN (article 002)", core.mnist_keras_model("cnn")),
                        ("SmallCNN (Keras copy)", keras_small_cnn())):
        core.fit_keras(model, x, y, epochs=EPOCHS, seed=0)
        rows += _litert_model_rows(core, name, model, x, xt, yt)
    return rows


def _litert_model_rows(core, name, model, x, xt, yt) -> list[dict]:
    rows, base = [], None
    for mode in ("float", "dynamic", "int8"):
        blob = core.convert_to_tflite(model, mode, representative_data=x)
        acc = 100 * core.tflite_accuracy(blob, xt, yt)
        run = core.tflite_callable(blob, xt[:BATCH], num_threads=THREADS)
        lat = measure.measure_latency(run, warmup=10, repeats=RUNS)
        base = base or (len(blob), acc, lat.median_ms)
        rows.append({"engine": "LiteRT", "model": name, "variant": mode,
                     "bytes": len(blob), "x smaller": round(base[0] / len(blob), 3),
                     "acc %": round(acc, 2), "drop pts": round(base[1] - acc, 2),
                     "median ms": round(lat.median_ms, 3),
                     "x faster": round(base[2] / lat.median_ms, 2)})
    return rows


def main() -> None:
    start = time.perf_counter()
    ds = data.load_mnist()
    if "--litert-only" in sys.argv:  # re-measure the LiteRT rows, keep the others
        old = json.loads(OUT.read_text())["rows"]
        rows = [r for r in old if r["engine"] != "LiteRT"] + litert_rows(ds)
    else:
        rows = torch_rows(ds) + qat_rows(ds) + litert_rows(ds)
    setting = (f"MNIST, train {TRAIN_SIZE:,} images x {EPOCHS} epochs, test 10,000; CPU "
               f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
               f"{THREADS} thread, batch {BATCH}, median of {RUNS} runs after 10 warm-up")
    table = measure.Table(rows, title=f"Quantization benchmark: {setting}")
    print(table)
    print("\nTargets:", TARGETS)
    print("Anchors (published, not measured here):")
    for k, v in ANCHORS.items():
        print(f"  {k}: {v}")
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"setting": setting, "targets": TARGETS, "anchors": ANCHORS,
                               "torch": torch.__version__, "seconds": round(seconds, 1),
                               "litert_only_rerun": "--litert-only" in sys.argv,
                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
