"""``companion report``: the book's techniques applied to your own model.

Examples::

    companion report weights.pt --arch SmallCNN --data mnist --test-size 2000
    companion report weights.pt --arch mymodule:MyNet --data eval.npz --plot report.png
    companion report weights.pt --arch mymodule:MyNet --arch-kwargs '{"num_classes": 10}' \\
        --data eval.npz
    companion report model.pt2 --data eval.npz       # a torch.export archive

The model is one of:

* a state dict, saved with ``torch.save(model.state_dict(), "weights.pt")``
  and loaded with ``weights_only=True`` (a file that carries pickled code is
  refused), plus ``--arch``: the name of a class of ``companion.models``
  (``SmallCNN``, ``LeNet5``, ``LeNet300100``) or ``module:Name``, where
  ``module.py`` is in the current directory or importable and ``Name`` is an
  ``nn.Module`` class or a function that returns the model (a factory).
  ``--arch-kwargs`` passes constructor (or factory) arguments as a JSON object,
  e.g. ``'{"num_classes": 10}'``;
* a ``torch.export`` archive (``.pt2``) written by
  ``torch.export.save(torch.export.export(model.eval(), (x,),
  dynamic_shapes=({0: torch.export.Dim("batch")},)), "model.pt2")``: export it
  in eval mode and with a dynamic batch dimension. It runs as exported: the
  pruning and dynamic int8 rows need the model's layers and say "not
  applicable".

The evaluation data (``--data``) is ``mnist``, ``fashion-mnist`` or an ``.npz``
file written with ``np.savez("eval.npz", x=x, y=y, x_calib=x_calib)``:

* ``x``: inputs, shape (N, C, H, W), float32, scaled as in training (not
  uint8 pixels, not channels-last N,H,W,C); integer token ids (N, T) for a
  model that starts with an embedding;
* ``y``: shape (N,), integer class labels in 0 .. (number of logits - 1);
* ``x_calib`` (optional): calibration inputs, same layout as ``x``, taken
  from training or validation data, never from the evaluation set. Static
  int8 (PyTorch and ONNX Runtime) is calibrated on them; without them those
  rows say "not applicable". With ``mnist`` the calibration data are 1,024
  training images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli_load import load_eval_data, load_model

__all__ = ["main", "load_model", "load_eval_data"]


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="companion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="measure the book's techniques on your model",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("model", help="state dict (.pt/.pth, torch.save(model.state_dict(), path)) "
                   "or torch.export archive (.pt2)")
    r.add_argument("--arch", help="for a state dict: a companion.models class (SmallCNN, "
                   "LeNet5, LeNet300100) or module:Name, Name a class or a function that "
                   "returns the model; module.py may be in the current directory")
    r.add_argument("--arch-kwargs", default=None, metavar="JSON",
                   help="constructor or factory arguments as a JSON object, "
                   "e.g. '{\"num_classes\": 10}'")
    r.add_argument("--data", default="mnist",
                   help="mnist | fashion-mnist | file.npz with x (N,C,H,W float32), y (N,) int "
                   "labels and optional x_calib (calibration inputs like x)")
    r.add_argument("--test-size", type=int, default=None, help="evaluate on the first N")
    r.add_argument("--sparsity", type=float, nargs="*", default=[0.5, 0.9],
                   help="magnitude pruning levels (none to skip)")
    r.add_argument("--channels", type=float, default=0.5,
                   help="fraction of channels removed by structured pruning (0 to skip)")
    r.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    r.add_argument("--batch-size", type=int, default=64, help="batch of the latency timing")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--repeats", type=int, default=20, help="interleaved timing rounds")
    r.add_argument("--plot", help="save a size/accuracy/latency figure here")
    r.add_argument("--json", help="save the table as JSON here")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _arch_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--arch-kwargs is not valid JSON ({err.msg} at character {err.pos}); "
                         f"write a JSON object such as '{{\"num_classes\": 10}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"--arch-kwargs must be a JSON object such as '{{\"num_classes\": 10}}', "
                         f"got {text!r}")
    return value


def _check_output(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {Path(path).resolve().parent} does not exist")


def _fail(message: str) -> int:
    print(f"companion report: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run ``companion report``; 0 on success, 2 (one line on stderr) on a user error."""
    from .report import ReportConfig, _check_first_batch, optimization_report, plot_report
    from .train import logits_of

    args = _parser().parse_args(argv)
    try:
        _check_output(args.json, "--json")
        _check_output(args.plot, "--plot")
        config = ReportConfig(sparsities=tuple(args.sparsity),
                              channel_ratio=args.channels or None, onnx=not args.no_onnx,
                              batch_size=args.batch_size, threads=args.threads,
                              repeats=args.repeats)
        model = load_model(args.model, args.arch, _arch_kwargs(args.arch_kwargs))
        eval_loader, calib = load_eval_data(args.data, args.test_size)
        _check_first_batch(model, eval_loader, logits_of, source=f"--data {args.data}")
    except (ValueError, TypeError, OSError) as err:   # OSError: MNIST files missing, say
        return _fail(str(err))
    try:
        table = optimization_report(model, eval_loader, calibration=calib, config=config,
                                    progress=not args.quiet)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    print(table)
    try:
        if args.json:
            table.save_json(args.json)
        if args.plot:
            plot_report(table, args.plot)
    except OSError as err:
        return _fail(f"cannot write the output: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
