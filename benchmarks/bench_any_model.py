"""companion on a model nobody here wrote: a torchvision-style ResNet-18 and the report.

Run:  python benchmarks/bench_any_model.py   (about 2-4 minutes on 2 CPU cores)
Writes benchmarks/results/any_model.json and prints one table.

The model is tests/user_models.py's ResNet-18 (torchvision's 2-2-2-2 BasicBlock
layout with a 3x3 stem for 32x32 images, 11.2 M parameters), randomly
initialised: no weights are downloaded. Its "labels" are its own fp32
predictions on random images, so the accuracy column reads as agreement with
the float model. Every row of companion.report.optimization_report is
measured: static int8 through PT2E (torch.export, torchao's
X86InductorQuantizer, torch.compile), channel pruning through the graph that
Torch-Pruning traces, ONNX Runtime; speed-ups against the fastest plain fp32
path, variants interleaved, 1 thread, batch 64. FLOPs from count_flops.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from _record import Record
from torch.utils.data import DataLoader, TensorDataset

from companion import measure, prune, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from user_models import ResNet18  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "any_model.json"


def main() -> None:
    record = Record(threads=1, baselines={
        "speed": "the fastest plain fp32 PyTorch path (BatchNorm folded, channels-last where "
                 "faster) at batch 64, 1 thread; all variants interleaved",
        "accuracy": "agreement with the fp32 model's own predictions (random weights)"})
    torch.manual_seed(0)
    model = ResNet18().eval()
    x_eval, x_calib = torch.rand(512, 3, 32, 32), torch.rand(256, 3, 32, 32)
    with torch.no_grad():
        y_eval = torch.cat([model(b).argmax(1) for b in x_eval.split(64)])
    eval_loader = DataLoader(TensorDataset(x_eval, y_eval), batch_size=64)
    calib = DataLoader(TensorDataset(x_calib, torch.zeros(256, dtype=torch.long)), batch_size=32)
    t0 = time.time()
    table = report.optimization_report(
        model, eval_loader, calibration=calib, progress=False,
        config=report.ReportConfig(sparsities=(), channel_ratio=0.5, repeats=10))
    seconds = time.time() - t0
    print(table)
    x1 = x_eval[:1]
    small = prune.prune_channels(model, 0.5, example_input=x1)
    flops = {"fp32": measure.count_flops(model, x1).macs,
             "channels -50%": measure.count_flops(small, x1).macs}
    print(f"MACs per image: fp32 {flops['fp32']:,}, channels -50% {flops['channels -50%']:,}")
    record.write(OUT, {"title": table.title, "rows": table.rows, "macs_per_image": flops,
                       "report_seconds": seconds})


if __name__ == "__main__":
    main()
