"""``companion report``: the book's techniques applied to your own model.

Examples::

    companion report weights.pt --arch SmallCNN --data mnist --test-size 2000
    companion report weights.pt --arch mypkg.nets:Net --data my_eval.npz --plot report.png
    companion report model.pt2 --data mnist          # a torch.export archive

The PyTorch model is either a state dict (loaded with ``weights_only=True``,
never unpickling code) plus ``--arch`` (a class of ``companion.models`` or
``module:Class``), or a ``torch.export`` archive (``.pt2``). Evaluation data
is ``mnist``, ``fashion-mnist`` or an ``.npz`` file with arrays ``x`` and
``y``. Static int8 is calibrated on training data (MNIST's train split, or
the ``.npz``'s ``x_calib`` if present).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["main", "load_model", "load_eval_data"]


def load_model(path: str | Path, arch: str | None) -> nn.Module:
    """A model from a state dict (+ architecture) or a ``torch.export`` archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model: no file at {path}")
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    if arch is None:
        raise ValueError("--arch is required with a state dict (e.g. SmallCNN or pkg.mod:Class)")
    if ":" in arch:
        mod, cls = arch.split(":", 1)
        factory = getattr(importlib.import_module(mod), cls)
    else:
        from . import models
        factory = getattr(models, arch, None)
        if factory is None or not isinstance(factory, type):
            raise ValueError(f"--arch {arch!r} is not a class of companion.models; "
                             "use module:Class for your own")
    model = factory()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    model.load_state_dict(state)
    return model.eval()


def load_eval_data(spec: str, test_size: int | None, batch_size: int = 256
                   ) -> tuple[DataLoader, DataLoader]:
    """``(eval_loader, calibration_loader)`` for ``mnist``, ``fashion-mnist`` or an ``.npz``."""
    from . import data

    if spec in ("mnist", "fashion-mnist"):
        ds = data.load_mnist() if spec == "mnist" else data.load_fashion_mnist()
        loaders = data.make_loaders(ds, batch_size, test_size=test_size,
                                    eval_batch_size=batch_size)
        calib = data.make_loaders(ds, batch_size, train_size=1024).train
        return loaders.test, calib
    path = Path(spec)
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(f"--data must be mnist, fashion-mnist or an existing .npz, got {spec!r}")
    with np.load(path) as f:
        x, y = torch.from_numpy(f["x"]).float(), torch.from_numpy(f["y"]).long()
        xc = torch.from_numpy(f["x_calib"]).float() if "x_calib" in f else None
    if test_size:
        x, y = x[:test_size], y[:test_size]
    eval_loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    calib = (DataLoader(TensorDataset(xc, torch.zeros(len(xc), dtype=torch.long)),
                        batch_size=batch_size) if xc is not None else None)
    return eval_loader, calib


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="companion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="measure the book's techniques on your model")
    r.add_argument("model", help="state dict (.pt/.pth) or torch.export archive (.pt2)")
    r.add_argument("--arch", help="companion.models class or module:Class (state dicts)")
    r.add_argument("--data", default="mnist", help="mnist | fashion-mnist | file.npz")
    r.add_argument("--test-size", type=int, default=None, help="evaluate on the first N")
    r.add_argument("--sparsity", type=float, nargs="*", default=[0.5, 0.9])
    r.add_argument("--channels", type=float, default=0.5,
                   help="fraction of channels removed by structured pruning (0 to skip)")
    r.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--repeats", type=int, default=20)
    r.add_argument("--plot", help="save a size/accuracy/latency figure here")
    r.add_argument("--json", help="save the table as JSON here")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    from .report import ReportConfig, optimization_report, plot_report

    args = _parser().parse_args(argv)
    try:
        model = load_model(args.model, args.arch)
        eval_loader, calib = load_eval_data(args.data, args.test_size)
        config = ReportConfig(sparsities=tuple(args.sparsity),
                              channel_ratio=args.channels or None, onnx=not args.no_onnx,
                              batch_size=args.batch_size, threads=args.threads,
                              repeats=args.repeats)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"companion report: {err}", file=sys.stderr)
        return 2
    table = optimization_report(model, eval_loader, calibration=calib, config=config,
                                progress=not args.quiet)
    print(table)
    if args.json:
        table.save_json(args.json)
    if args.plot:
        plot_report(table, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
