"""Inference-engine benchmark: one model, the same inputs, every engine that runs here.

Run:  python benchmarks/bench_infer.py   (about 3-6 minutes on 2 CPU cores)
Writes benchmarks/results/infer.json and prints one table.

Engines: eager PyTorch as trained, the fastest plain fp32 PyTorch path
(infer.fastest_fp32: BatchNorm folded, channels-last), torch.compile
(inductor, dynamic batch), ONNX Runtime fp32 and int8 (static, per-channel),
LiteRT fp32 and int8 (a Keras CNN of similar size trained the same way,
labelled as such). Batch sizes 1, 16 and 256; 1 and 2 intra-op threads; for
each setting all engines are timed together in 30 interleaved rounds on the
CPU (measure.compare_latency), and speed-ups are against the fastest plain
fp32 PyTorch path. The 2-thread rows are valid only on an otherwise idle
machine. Accuracy on the 10,000 MNIST test images.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _record import Record

from companion import data, infer, measure, models, train

OUT = Path(__file__).resolve().parent / "results" / "infer.json"
BATCHES = [1, 16, 256]
THREADS = [1, 2]


def main() -> None:
    record = Record(threads=1, baselines={
        "speed": "the fastest plain fp32 PyTorch path (BatchNorm folded, channels-last where "
                 "faster) at the same batch and threads; engines interleaved"})
    mnist = data.load_mnist()
    loaders = data.make_loaders(mnist, 64, train_size=10_000)
    train.set_seed(0)
    model = models.SmallCNN()
    train.fit(model, loaders.train, epochs=2, device="cpu", progress=False)
    model.eval()
    x_test = torch.from_numpy(mnist.test.x).unsqueeze(1)
    y_test = mnist.test.y
    calib = torch.from_numpy(mnist.train.x[:512]).unsqueeze(1)

    onnx32 = infer.export_onnx(model, x_test[:64])
    onnx8 = infer.quantize_onnx_int8(onnx32, [calib])
    compiled = infer.compile_model(model, dynamic=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x_test[:16])
    compile_s = time.perf_counter() - t0

    from companion.keras import core as kcore

    xk, yk = data.keras_arrays(mnist.train.take(10_000))
    xk_test, yk_test = data.keras_arrays(mnist.test)
    kmodel = kcore.mnist_keras_model("cnn")
    kcore.fit_keras_(kmodel, xk, yk, epochs=2, batch_size=64, seed=0)
    tfl32 = kcore.convert_to_tflite(kmodel, mode="float")
    tfl8 = kcore.convert_to_tflite(kmodel, mode="int8", representative_data=xk[:512])

    def torch_acc(m):
        return infer.accuracy_of(lambda b: m(torch.from_numpy(b)).detach().numpy(), x_test, y_test)

    s1 = {"fp32": infer.ort_session(onnx32), "int8": infer.ort_session(onnx8)}
    acc = {"eager PyTorch": torch_acc(model),
           "torch.compile": None,
           "ONNX Runtime fp32": infer.accuracy_of(lambda b: infer.ort_predict(s1["fp32"], b),
                                                  x_test, y_test),
           "ONNX Runtime int8": infer.accuracy_of(lambda b: infer.ort_predict(s1["int8"], b),
                                                  x_test, y_test),
           "LiteRT fp32 (Keras CNN)": kcore.tflite_accuracy(tfl32, xk_test, yk_test),
           "LiteRT int8 (Keras CNN)": kcore.tflite_accuracy(tfl8, xk_test, yk_test)}
    with torch.inference_mode():
        acc["torch.compile"] = torch_acc(compiled)
    fast = infer.fastest_fp32(model, x_test[:64])
    base = f"PyTorch fp32, {fast.name}"
    acc[base] = acc["eager PyTorch"]                   # the same function
    size = {"eager PyTorch": measure.serialized_size(model).bytes,
            base: measure.serialized_size(model).bytes,
            "torch.compile": measure.serialized_size(model).bytes,
            "ONNX Runtime fp32": len(onnx32), "ONNX Runtime int8": len(onnx8),
            "LiteRT fp32 (Keras CNN)": len(tfl32), "LiteRT int8 (Keras CNN)": len(tfl8)}

    rows = []
    for t in THREADS:
        sessions = {"fp32": infer.ort_session(onnx32, threads=t),
                    "int8": infer.ort_session(onnx8, threads=t)}
        for b in BATCHES:
            xb = x_test[:b]
            engines = {
                "eager PyTorch": model, base: fast.model, "torch.compile": compiled,
                "ONNX Runtime fp32": infer.ort_runner(sessions["fp32"], xb),
                "ONNX Runtime int8": infer.ort_runner(sessions["int8"], xb),
                "LiteRT fp32 (Keras CNN)": kcore.tflite_callable(tfl32, xk_test[:b], num_threads=t),
                "LiteRT int8 (Keras CNN)": kcore.tflite_callable(tfl8, xk_test[:b], num_threads=t),
            }
            timing = measure.compare_latency(engines, xb, baseline=base, repeats=30, threads=t)
            for name in engines:
                rows.append({"engine": name, "batch": b, "threads": t,
                             "median_ms": timing.median_ms(name),
                             "x faster than fastest plain fp32": timing.speedup(name),
                             "images/s": b / timing.median_ms(name) * 1000,
                             "size_bytes": size[name], "accuracy": acc[name]})
    table = measure.Table(rows, title="inference engines, cpu (SmallCNN; LiteRT: Keras CNN)")
    print(table)
    print(f"torch.compile first call (compilation): {compile_s:.1f} s")
    record.write(OUT, {"title": table.title, "rows": rows, "compile_seconds": compile_s})


if __name__ == "__main__":
    main()
