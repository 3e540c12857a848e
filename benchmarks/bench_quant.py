"""Quantization benchmark: int8 PyTorch (dynamic / static), LiteRT full-integer, 4-bit QAT vs PTQ.

Prints a table and writes ``benchmarks/results/quant.json``. Every figure is
measured in this run (one run writes every row): size = bytes of the
serialized artifact, accuracy on the 10,000 MNIST test images, latency =
median of interleaved rounds (:func:`companion.measure.compare_latency`) at
batch 64 on the CPU with the stated thread count.

Baselines: speed-ups are against the fastest plain fp32 PyTorch path
(BatchNorm folded, channels-last where it helps); torch.compile and ONNX
Runtime fp32 rows show what other fp32 engines reach on the same machine.
QAT trains one more epoch than the fp32 model, so its accuracy is compared
with the fp32 model given that same extra epoch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _record import Record

from companion import data, infer, measure, models, quant, train

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
        fast = infer.fastest_fp32(model, batch, threads=THREADS)
        onnx = infer.export_onnx(model, batch)
        compiled = infer.compile_model(model, dynamic=False)
        with torch.inference_mode():
            compiled(batch)                                     # compile outside the timing
        variants = {"fp32 eager (as trained)": model, f"fp32 {fast.name}": fast.model,
                    "fp32 torch.compile": compiled,
                    "fp32 ONNX Runtime": infer.ort_runner(infer.ort_session(onnx, threads=THREADS),
                                                          batch),
                    "dynamic int8": quant.quantize_model(model, quant.DynamicInt8Config()),
                    "static int8": quant.quantize_model(
                        model, quant.StaticInt8Config(loaders.train, num_batches=20))}
        timing = measure.compare_latency(variants, batch, baseline=f"fp32 {fast.name}",
                                         rounds=RUNS, threads=THREADS)
        fp32_bytes = measure.serialized_size(model).bytes
        fp32_acc = 100 * train.evaluate(model, loaders.test)
        for kind, m in variants.items():
            lo, hi = timing.speedup_spread(kind)
            if kind == "fp32 ONNX Runtime":
                size, acc = len(onnx), fp32_acc          # the same function (tested elsewhere)
            elif kind.startswith("fp32"):
                size, acc = fp32_bytes, fp32_acc
            else:
                size, acc = measure.serialized_size(m).bytes, 100 * train.evaluate(m, loaders.test)
            rows.append({"engine": "PyTorch" if "ONNX" not in kind else "ONNX Runtime",
                         "model": name, "variant": kind, "bytes": size,
                         "x smaller": round(fp32_bytes / size, 3), "acc %": round(acc, 2),
                         "drop pts": round(fp32_acc - acc, 2),
                         "median ms": round(timing.median_ms(kind), 3),
                         "x faster than fastest plain fp32": round(timing.speedup(kind), 2),
                         "ratio p10-p90": f"{lo:.2f}-{hi:.2f}"})
    return rows


def qat_rows(ds) -> list[dict]:
    loaders = data.make_loaders(ds, 64, train_size=TRAIN_SIZE, flatten=True)
    train.set_seed(0)
    model = models.LeNet300100()
    train.fit(model, loaders.train, epochs=EPOCHS, device="cpu", progress=False)
    fp32 = 100 * train.evaluate(model, loaders.test)
    plus1 = train.clone(model)                 # equal budget: the epoch QAT gets, in fp32
    train.set_seed(0)
    train.fit(plus1, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    fp32_plus1 = 100 * train.evaluate(plus1, loaders.test)
    engine = "PyTorch (simulated 4-bit)"
    rows = [{"engine": engine, "model": "LeNet-300-100", "variant": f"fp32 ({EPOCHS} epochs)",
             "acc %": round(fp32, 2)},
            {"engine": engine, "model": "LeNet-300-100",
             "variant": "fp32 + 1 epoch (equal budget to QAT)", "acc %": round(fp32_plus1, 2)}]
    ptq = quant.quantize_model(model, quant.QATConfig(bits=4, momentum=1.0))
    quant.calibrate_fake_quant_(ptq, loaders.train, num_batches=20)
    qat = quant.quantize_model(model, quant.QATConfig(bits=4))
    train.set_seed(0)
    train.fit(qat, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    for kind, m, ref in (("PTQ 4-bit", ptq, fp32), ("QAT 4-bit (1 epoch)", qat, fp32_plus1)):
        acc = 100 * train.evaluate(m, loaders.test)
        rows.append({"engine": engine, "model": "LeNet-300-100", "variant": kind,
                     "acc %": round(acc, 2), "drop pts": round(ref - acc, 2),
                     "drop against": "fp32" if ref is fp32 else "fp32 + 1 epoch"})
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
    blobs = {mode: core.convert_to_tflite(model, mode, representative_data=x)
             for mode in ("float", "dynamic", "int8")}
    timing = measure.compare_latency(
        {mode: core.tflite_callable(blob, xt[:BATCH], num_threads=THREADS)
         for mode, blob in blobs.items()}, rounds=RUNS, threads=THREADS)
    rows, base = [], None
    for mode, blob in blobs.items():
        acc = 100 * core.tflite_accuracy(blob, xt, yt)
        base = base or (len(blob), acc)
        rows.append({"engine": "LiteRT", "model": name, "variant": mode,
                     "bytes": len(blob), "x smaller": round(base[0] / len(blob), 3),
                     "acc %": round(acc, 2), "drop pts": round(base[1] - acc, 2),
                     "median ms": round(timing.median_ms(mode), 3),
                     "x faster than LiteRT float": round(timing.speedup(mode), 2)})
    return rows


def main() -> None:
    record = Record(threads=THREADS, baselines={
        "speed": "fastest plain fp32 PyTorch path (infer.fastest_fp32); torch.compile and ONNX "
                 "Runtime fp32 rows beside it; LiteRT rows against LiteRT float",
        "accuracy": "the fp32 model; QAT against the fp32 model given QAT's extra epoch"})
    start = time.perf_counter()
    ds = data.load_mnist()
    rows = torch_rows(ds) + qat_rows(ds) + litert_rows(ds)
    setting = (f"MNIST, train {TRAIN_SIZE:,} images x {EPOCHS} epochs, test 10,000; CPU, "
               f"{THREADS} thread, batch {BATCH}, median of {RUNS} interleaved rounds")
    table = measure.Table(rows, title=f"Quantization benchmark: {setting}")
    print(table)
    print("\nTargets:", TARGETS)
    print("Anchors (published, not measured here):")
    for k, v in ANCHORS.items():
        print(f"  {k}: {v}")
    print(f"\n{time.perf_counter() - start:.0f} s")
    record.write(OUT, {"setting": setting, "targets": TARGETS, "anchors": ANCHORS, "rows": rows})


if __name__ == "__main__":
    main()
