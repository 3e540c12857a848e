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
        fp32_bytes = measure.serialized_size(model).bytes     # every fp32 row is this function
        session = infer.ort_session(onnx, threads=THREADS)
        variants = {
            "fp32 eager (as trained)": model,
            f"fp32 {fast.name}": measure.Variant(model=fast.model, size_bytes=fp32_bytes),
            "fp32 torch.compile": measure.Variant(model=compiled, predict=model,
                                                  size_bytes=fp32_bytes),
            "fp32 ONNX Runtime": measure.Variant(
                run=infer.ort_runner(session, batch), size_bytes=len(onnx),
                predict=lambda b, s=session: infer.ort_predict(s, b)),
            "dynamic int8": quant.quantize_model(model, quant.DynamicInt8Config()),
            "static int8": quant.quantize_model(
                model, quant.StaticInt8Config(num_batches=20), calibration=loaders.train)}
        table = measure.compare(variants, batch, loaders.test, baseline=f"fp32 {fast.name}",
                                repeats=RUNS, threads=THREADS, title=name)
        rows += [{"engine": "ONNX Runtime" if "ONNX" in r["variant"] else "PyTorch",
                  "model": name, **r} for r in table.rows]
    return rows


def qat_rows(ds) -> list[dict]:
    loaders = data.make_loaders(ds, 64, train_size=TRAIN_SIZE, flatten=True)
    train.set_seed(0)
    model = models.LeNet300100()
    train.fit(model, loaders.train, epochs=EPOCHS, device="cpu", progress=False)
    fp32 = train.evaluate(model, loaders.test)
    plus1 = train.clone(model)                 # equal budget: the epoch QAT gets, in fp32
    train.set_seed(0)
    train.fit(plus1, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    fp32_plus1 = train.evaluate(plus1, loaders.test)
    engine = "PyTorch (simulated 4-bit)"
    rows = [{"engine": engine, "model": "LeNet-300-100", "variant": f"fp32 ({EPOCHS} epochs)",
             "accuracy": fp32},
            {"engine": engine, "model": "LeNet-300-100",
             "variant": "fp32 + 1 epoch (equal budget to QAT)", "accuracy": fp32_plus1}]
    ptq = quant.quantize_model(model, quant.PTQConfig(bits=4, num_batches=20),
                               calibration=loaders.train)
    qat = quant.quantize_model(model, quant.QATConfig(bits=4))
    train.set_seed(0)
    train.fit(qat, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    for kind, m, ref in (("PTQ 4-bit", ptq, fp32), ("QAT 4-bit (1 epoch)", qat, fp32_plus1)):
        acc = train.evaluate(m, loaders.test)
        rows.append({"engine": engine, "model": "LeNet-300-100", "variant": kind,
                     "accuracy": acc, "acc drop (pts)": 100 * (ref - acc),
                     "note": "drop against " + ("fp32" if ref is fp32 else "fp32 + 1 epoch")})
    quant.convert_qat_(qat)
    rows[-1]["bytes"] = measure.serialized_size(qat).bytes
    rows[-1]["size x"] = measure.serialized_size(model).bytes / rows[-1]["bytes"]
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
        core.fit_keras_(model, x, y, epochs=EPOCHS, seed=0)
        rows += _litert_model_rows(core, name, model, x, xt, yt)
    return rows


def _litert_model_rows(core, name, model, x, xt, yt) -> list[dict]:
    blobs = {mode: core.convert_to_tflite(model, mode, representative_data=x)
             for mode in ("float", "dynamic", "int8")}
    eval_data = [(torch.from_numpy(xt[i:i + 1000]), torch.from_numpy(yt[i:i + 1000]))
                 for i in range(0, len(xt), 1000)]
    table = measure.compare(
        {mode: measure.Variant(run=core.tflite_callable(blob, xt[:BATCH], num_threads=THREADS),
                               predict=lambda b, blob=blob: core.tflite_predict(blob, b.numpy()),
                               size_bytes=len(blob))
         for mode, blob in blobs.items()}, eval_data=eval_data, repeats=RUNS, threads=THREADS,
        title=f"LiteRT, {name}", batch_size=BATCH)
    return [{"engine": "LiteRT", "model": name, **r} for r in table.rows]


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
