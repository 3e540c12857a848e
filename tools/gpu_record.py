"""Record the book's GPU figures on a CUDA machine (``make test-gpu``).

Measures, on the first CUDA device:

* inference latency of ``SmallCNN`` (trained 1 epoch on 10,000 MNIST images)
  at batch 1, 64 and 1024: CUDA eager fp32, CUDA eager with bf16 autocast,
  ``torch.compile`` and, only if ``torch_tensorrt`` imports, TensorRT;
* training throughput of a GEMM-heavy MLP (784-4096-4096-10) in fp32, bf16
  and fp16 (with ``GradScaler``), and the test accuracy each precision reaches
  after the same training on MNIST (goal: bf16 >= 1.8x fp32 on an H100-class
  GPU, accuracy within 0.2 points);

and writes ``benchmarks/results/gpu/<date>-<device>.json``, which the book's
sections 3.3 and 5.3 display (labelled with device and date). With
``--notebooks`` it also executes those two notebooks and stores their text
outputs in the record.

Without CUDA it prints why, writes nothing and exits with status 2: a GPU
record can only come from a GPU. ``--dry-run-cpu DIR`` runs the same code
paths on the CPU with small sizes and writes the JSON into ``DIR`` (never
into ``benchmarks/results/gpu``); it exists to test this script.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import re
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from companion import amp, data, measure, models, train  # noqa: E402

RECORD_DIR = ROOT / "benchmarks" / "results" / "gpu"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def inference_rows(device: torch.device, batches: list[int], repeats: int) -> list[dict]:
    """Latency rows for eager, bf16 autocast, torch.compile and TensorRT (if importable)."""
    mnist = data.load_mnist()
    loaders = data.make_loaders(mnist, 64, train_size=10_000)
    train.set_seed(0)
    model = models.SmallCNN()
    train.fit(model, loaders.train, epochs=1, device=device, progress=False)
    model.eval()
    acc = train.evaluate(model, loaders.test)
    engines = {"CUDA eager fp32" if device.type == "cuda" else "eager fp32": model}
    compiled = torch.compile(train.clone(model).eval(), dynamic=False)
    engines["torch.compile"] = compiled
    trt = None
    if device.type == "cuda" and importlib.util.find_spec("torch_tensorrt") is not None:
        import torch_tensorrt

        trt = torch_tensorrt.compile(train.clone(model).eval(), ir="dynamo",
                                     inputs=[torch.rand(batches[-1], 1, 28, 28, device=device)])
    rows = []
    for b in batches:
        x = torch.rand(b, 1, 28, 28, device=device)
        for name, m in engines.items():
            rep = measure.measure_latency(m, x, warmup=10, repeats=repeats, device=device)
            rows.append({"engine": name, "batch": b, "median_ms": rep.median_ms,
                         "p90_ms": rep.p90_ms, "images/s": rep.throughput, "test acc": acc})
        def bf16_call(m=model, x=x):
            with torch.autocast(device.type, dtype=torch.bfloat16), torch.inference_mode():
                return m(x)
        rep = measure.measure_latency(bf16_call, warmup=10, repeats=repeats, device=device)
        rows.append({"engine": "eager bf16 autocast", "batch": b, "median_ms": rep.median_ms,
                     "p90_ms": rep.p90_ms, "images/s": b / (rep.median_ms / 1000)})
        if trt is not None and b == batches[-1]:
            rep = measure.measure_latency(trt, x, warmup=10, repeats=repeats, device=device)
            rows.append({"engine": "TensorRT (torch_tensorrt)", "batch": b,
                         "median_ms": rep.median_ms, "p90_ms": rep.p90_ms,
                         "images/s": rep.throughput})
    return rows


def amp_rows(device: torch.device, width: int, batch: int, epochs: int) -> list[dict]:
    """Throughput and accuracy of a GEMM-heavy MLP in fp32, bf16 and fp16."""
    def make() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(),
                             nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)).to(device)

    mnist = data.load_mnist()
    loaders = data.make_loaders(mnist, batch, flatten=True)
    x = torch.rand(batch, 784, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for precision in ("fp32", "bf16", "fp16"):
        train.set_seed(0)
        ips = amp.throughput(make(), x, y, precision=precision, repeats=50, warmup=10)
        train.set_seed(0)
        model = make()
        rep = amp.fit_amp_(model, loaders.train, precision=precision, epochs=epochs,
                          test_loader=loaders.test)
        rows.append({"precision": precision, "train images/s": ips, "test acc": rep.accuracy,
                     "skipped steps": rep.skipped_steps})
    base = rows[0]["train images/s"]
    for r in rows:
        r["speed-up vs fp32"] = r["train images/s"] / base
    return rows


def notebook_outputs(paths: list[Path]) -> dict[str, list[str]]:
    """Execute notebooks (in their folders) and return their text outputs."""
    import nbformat
    from nbclient import NotebookClient

    out = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        out[str(path.relative_to(ROOT))] = [
            "".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run-cpu", metavar="DIR", type=Path,
                        help="run the code paths on the CPU with small sizes, write into DIR")
    parser.add_argument("--notebooks", action="store_true",
                        help="also execute sections 3.3 and 5.3 and store their outputs")
    args = parser.parse_args(argv)

    if args.dry_run_cpu is None and not torch.cuda.is_available():
        print("gpu_record: no CUDA device here, so nothing was recorded. Run `make test-gpu` "
              "on a machine with an NVIDIA GPU and a CUDA build of PyTorch.", file=sys.stderr)
        return 2
    if args.dry_run_cpu is not None:
        out_dir = args.dry_run_cpu.resolve()
        if out_dir == RECORD_DIR.resolve():
            print("gpu_record: a CPU dry run must not write into the GPU record folder",
                  file=sys.stderr)
            return 2
        device, label = torch.device("cpu"), f"CPU dry run ({platform.processor() or 'cpu'})"
        batches, repeats, width, batch, epochs = [1, 8], 3, 64, 256, 1
    else:
        out_dir = RECORD_DIR
        device, label = torch.device("cuda"), torch.cuda.get_device_name(0)
        batches, repeats, width, batch, epochs = [1, 64, 1024], 50, 4096, 512, 2
    now = datetime.datetime.now(datetime.UTC)
    record = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "device": label,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tensorrt": "torch_tensorrt importable" if importlib.util.find_spec("torch_tensorrt")
        else "torch_tensorrt not importable: no TensorRT rows",
        "inference": inference_rows(device, batches, repeats),
        "amp": amp_rows(device, width, batch, epochs),
    }
    if args.notebooks:
        record["notebooks"] = notebook_outputs(
            [ROOT / "book/ch3-performance/03-inference-engines.ipynb",
             ROOT / "book/ch5-efficiency/03-mixed-precision.ipynb"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{now:%Y-%m-%d}-{_slug(label)}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(measure.Table(record["inference"], title=f"inference on {label}"))
    print(measure.Table(record["amp"], title=f"training precision on {label}"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
