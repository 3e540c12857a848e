"""Mixed-precision training: autocast, fp32 master weights, loss scaling.

Mixed precision is *not* a choice of optimizer. It changes the precision in
which the forward and backward arithmetic runs (float16 or bfloat16 under
``torch.autocast``) while the weights the optimizer updates stay float32
(the "master weights"). float16 has a narrow exponent range, so small
gradients flush to zero; the loss is multiplied by a scale before the
backward pass and the gradients divided by it before the step
(``torch.amp.GradScaler``). bfloat16 has float32's exponent range and needs
no scaling (Micikevicius et al. 2018).

* :func:`amp_step_`: one training step under autocast, with an optional scaler;
* :func:`fit_amp_`: :func:`companion.train.fit` in a precision, with a report;
* :func:`underflow_report`: how many gradient values a low-precision
  backward pass loses, with and without a loss scale;
* :func:`throughput`: training images per second in fp32 / bf16 / fp16.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ._checks import check_float, check_int, check_module, check_tensor
from ._timing import time_calls
from .train import PRECISIONS, clone, evaluate, fit, logits_of, resolve_precision
from .train.evaluation import _model_device
from .train.loop import _default_batch_loss, _train_step

__all__ = [
    "AmpReport",
    "UnderflowReport",
    "amp_step_",
    "fit_amp_",
    "underflow_report",
    "throughput",
]


def amp_step_(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, *, precision: str | torch.dtype = "bf16",
              scaler: torch.amp.GradScaler | None = None) -> tuple[float, bool]:
    """One optimizer step with the forward pass under autocast.

    The parameters stay in their own dtype (float32 master weights); autocast
    runs matrix products and convolutions in ``precision``; the loss is
    computed in float32. This is the step of :func:`companion.train.fit`
    with ``precision=`` and ``grad_scaler=``.

    Args:
        model: trained in place.
        optimizer: steps ``model``'s float32 parameters.
        x, y: one batch (already on the model's device).
        precision: ``"fp32"`` (autocast off), ``"bf16"`` or ``"fp16"``.
        scaler: a ``torch.amp.GradScaler`` (for fp16); ``None`` for no scaling.

    Returns:
        ``(loss, stepped)``: the unscaled loss, and whether the optimizer
        stepped (a scaler skips steps whose gradients contain inf/NaN).
    """
    check_module(model, "model")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    dtype = resolve_precision(precision)
    scale_before = scaler.get_scale() if scaler is not None else None
    loss = _train_step(model, optimizer, (x, y), _default_batch_loss(
        nn.functional.cross_entropy, logits_of), dtype, scaler, 0, _model_device(model).type)
    stepped = scaler is None or scaler.get_scale() >= scale_before
    return loss.item(), stepped


@dataclass
class AmpReport:
    """What :func:`fit_amp_` saw: losses, skipped steps, accuracy, time and dtypes.

    ``seconds`` is wall-clock time; ``cpu_seconds`` the CPU time of this
    process (summed over its threads), which a busy shared machine disturbs less.
    """

    precision: str
    losses: list[float] = field(default_factory=list)
    skipped_steps: int = 0
    scales: list[float] = field(default_factory=list)
    accuracy: float = float("nan")
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    param_dtypes: tuple[str, ...] = ()
    images: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")

    def as_row(self) -> dict[str, Any]:
        """The scalar fields and ``images_per_s``; the per-step ``losses`` and
        ``scales`` become their count (``steps``) and last values."""
        row = {k: v for k, v in asdict(self).items() if k not in ("losses", "scales")}
        row["param_dtypes"] = ", ".join(self.param_dtypes)
        return {**row, "steps": len(self.losses),
                "final_loss": self.losses[-1] if self.losses else float("nan"),
                "final_scale": self.scales[-1] if self.scales else float("nan"),
                "images_per_s": self.images_per_s}


def fit_amp_(model: nn.Module, loader: Iterable, *, precision: str = "bf16", epochs: int = 1,
             lr: float = 1e-3, loss_scaling: bool | None = None, init_scale: float = 2.0 ** 16,
             test_loader: Iterable | None = None, max_steps: int | None = None) -> AmpReport:
    """Train ``model`` in place with :func:`companion.train.fit` in ``precision`` (Adam),
    and report the losses, the skipped steps and the loss scales.

    Args:
        model: trained in place on its current device.
        loader: yields ``(inputs, labels)``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        epochs: passes over ``loader``.
        lr: Adam's learning rate.
        loss_scaling: use a ``GradScaler``; default: only for fp16.
        init_scale: the scaler's initial loss scale.
        test_loader: if given, accuracy is measured after training.
        max_steps: stop after this many steps (None: all).
    """
    check_module(model, "model")
    dtype = resolve_precision(precision)
    check_float(init_scale, "init_scale", min_value=1.0)
    name = {v: k for k, v in PRECISIONS.items()}[dtype]
    use_scaler = dtype == torch.float16 if loss_scaling is None else bool(loss_scaling)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, init_scale=init_scale) if use_scaler else None
    report = AmpReport(name)
    last_scale = [init_scale]

    def record_scale(step: int) -> None:
        if scaler is not None:  # a step whose gradients overflowed lowers the scale
            report.scales.append(scaler.get_scale())
            report.skipped_steps += report.scales[-1] < last_scale[0]
            last_scale[0] = report.scales[-1]

    cpu_start = time.process_time()
    history = fit(model, loader, epochs=epochs, lr=lr, precision=dtype, grad_scaler=scaler,
                  max_steps=max_steps, after_step=record_scale, progress=False,
                  desc=f"train {name}")
    report.cpu_seconds = time.process_time() - cpu_start
    report.seconds, report.losses, report.images = (history.seconds, history.step_loss,
                                                    history.examples)
    report.param_dtypes = tuple(sorted({str(p.dtype).removeprefix("torch.")
                                        for p in model.parameters()}))
    if test_loader is not None:
        report.accuracy = evaluate(model, test_loader)
    return report


@dataclass
class UnderflowReport:
    """Gradient values lost by a low-precision backward pass.

    ``lost`` is the fraction of gradient entries that are non-zero in a
    float32 backward pass but exactly zero in the low-precision one;
    ``relative_error`` is ``|g_low - g_32| / |g_32|`` over all entries (after
    dividing out the loss scale); ``overflow`` says whether any gradient
    became inf/NaN.
    """

    dtype: str
    loss_scale: float
    lost: float
    relative_error: float
    overflow: bool

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def underflow_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     precision: str = "fp16", loss_scale: float = 1.0) -> UnderflowReport:
    """Compare the gradients of a copy of ``model`` computed entirely in ``precision``
    with float32 gradients (``model`` itself is not modified).

    The copy's weights, the input and every intermediate value are in
    ``precision``; the loss is multiplied by ``loss_scale`` before the
    backward pass and the gradients divided by it afterwards, as a
    ``GradScaler`` does.
    """
    check_module(model, "model")
    x = check_tensor(x, "x", floating=True)
    y = check_tensor(y, "y")
    dtype = resolve_precision(precision)
    check_float(loss_scale, "loss_scale", min_value=0.0, min_inclusive=False)
    ref_model, low_model = clone(model).float(), clone(model).to(dtype)
    nn.functional.cross_entropy(ref_model(x.float()), y).backward()
    loss = nn.functional.cross_entropy(low_model(x.to(dtype)).float(), y)
    (loss * loss_scale).backward()
    ref = torch.cat([p.grad.flatten() for p in ref_model.parameters()])
    low = torch.cat([p.grad.flatten() for p in low_model.parameters()]).float() / loss_scale
    overflow = not bool(torch.isfinite(low).all())
    nonzero = ref != 0
    lost = float(((low == 0) & nonzero).sum() / max(int(nonzero.sum()), 1))
    err = float((low - ref).norm() / ref.norm()) if not overflow else float("inf")
    return UnderflowReport(str(dtype).removeprefix("torch."), float(loss_scale), lost, err,
                           overflow)


def throughput(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, precision: str = "fp32",
               repeats: int = 20, warmup: int = 3) -> float:
    """Training images per second of a copy of ``model`` on one repeated batch.

    ``len(x)`` divided by the median time of one :func:`amp_step_`, timed by
    the library's one timing loop on the model's device (synchronizing CUDA,
    with the current thread count); fp16 uses a GradScaler.

    Args:
        model: copied; the copy takes the steps (``model`` is not changed).
        x, y: the one batch.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        repeats: timed training steps (the median is used).
        warmup: untimed steps first.

    Raises:
        TypeError, ValueError: a bad ``model``, ``x``, ``precision``, ``repeats``
            (< 1) or ``warmup`` (< 0).
    """
    check_module(model, "model")
    x = check_tensor(x, "x", floating=True)
    repeats = check_int(repeats, "repeats", min_value=1)
    warmup = check_int(warmup, "warmup", min_value=0)
    dtype = resolve_precision(precision)
    m = clone(model).train()
    device = next(m.parameters()).device
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    times, _ = time_calls({"step": lambda i: amp_step_(m, opt, x, y, precision=dtype,
                                                       scaler=scaler)},
                          repeats=repeats, warmup=warmup, threads=None, device=device)
    return len(x) / (statistics.median(times["step"]) / 1000)
