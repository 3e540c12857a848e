"""The library's one training loop, :func:`fit`, and what it returns, :class:`History`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm  # text bars: widget bars would need JavaScript from a CDN in the book

from .._checks import check_bool, check_callable, check_float, check_int, check_module
from .evaluation import (
    OutputFn,
    _check_not_empty,
    _device_batch,
    _model_device,
    _no_batch,
    _output_fn,
    evaluate,
)


@dataclass
class History:
    """What :func:`fit` saw.

    Attributes:
        train_loss: mean training loss of each epoch.
        val_acc: validation accuracy after each epoch (with a ``val_loader``).
        steps: optimizer steps taken.
        seconds: wall time of the whole run (data loading and validation included).
        step_loss: the loss of every step.
        examples: training examples seen.
        train_seconds: time spent in the steps themselves (forward, backward,
            update), without loading batches, validation or ``after_step``.
    """

    train_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    step_loss: list[float] = field(default_factory=list)
    examples: int = 0
    train_seconds: float = 0.0

    @property
    def final_val_acc(self) -> float:
        """Validation accuracy after the last epoch (NaN without a validation set)."""
        return self.val_acc[-1] if self.val_acc else float("nan")

    @property
    def best_val_acc(self) -> float:
        """Best validation accuracy over the epochs (NaN without a validation set)."""
        return max(self.val_acc) if self.val_acc else float("nan")

    def __str__(self) -> str:
        rows = [f"{'epoch':>5}  {'train loss':>10}  {'val acc':>8}"]
        for i, loss in enumerate(self.train_loss):
            acc = f"{self.val_acc[i]:8.4f}" if i < len(self.val_acc) else f"{'-':>8}"
            rows.append(f"{i + 1:>5}  {loss:>10.4f}  {acc}")
        rows.append(f"{self.steps} optimizer steps in {self.seconds:.1f} s")
        return "\n".join(rows)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

BatchLoss = Callable[[nn.Module, tuple], torch.Tensor]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; ``step`` is the step it happened at."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"loss became {loss} at step {step}; lower the learning rate")
        self.loss, self.step = loss, step


def resolve_precision(precision: str | torch.dtype) -> torch.dtype:
    """``"fp32"``/``"bf16"``/``"fp16"`` (or the torch dtype itself) as a torch dtype."""
    if isinstance(precision, torch.dtype) and precision in PRECISIONS.values():
        return precision
    if isinstance(precision, str) and precision in PRECISIONS:
        return PRECISIONS[precision]
    raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def _interactive() -> bool:
    """A person is watching: a terminal, or a Jupyter kernel."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple,
                batch_loss: BatchLoss, dtype: torch.dtype,
                scaler: torch.amp.GradScaler | None, step: int, device_type: str) -> torch.Tensor:
    """One optimizer step: the loss under autocast (off for fp32), backward, update.

    Without a scaler a non-finite loss raises :class:`NonFiniteLossError`
    before the update; with one, the scaler skips that update itself.
    """
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type,
                        dtype=torch.bfloat16 if dtype == torch.float32 else dtype,
                        enabled=dtype != torch.float32):
        loss = batch_loss(model, batch)
    if scaler is None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(loss.item(), step)
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss


def _default_batch_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        get_logits: OutputFn) -> BatchLoss:
    def batch_loss(model: nn.Module, batch: tuple) -> torch.Tensor:
        logits = get_logits(model(batch[0]))
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in fp32
            logits = logits.float()
        return loss_fn(logits, batch[1])

    return batch_loss


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int = 1,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        batch_loss: BatchLoss | None = None,
        val_loader: Iterable | None = None, scheduler: object | None = None,
        device: torch.device | str | None = None,
        after_step: Callable[[int], bool | None] | None = None,
        max_steps: int | None = None, precision: str | torch.dtype = "fp32",
        grad_scaler: torch.amp.GradScaler | None = None, history: History | None = None,
        progress: bool | None = None, desc: str = "train",
        output_fn: OutputFn | None = None) -> History:
    """Train ``model`` in place and return its :class:`History`: the library's one loop.

    Each step: zero the gradients, compute the batch's loss (under autocast
    when ``precision`` is not fp32), backward, ``optimizer.step()`` (through
    ``grad_scaler`` if given), ``scheduler.step()``, then ``after_step``.
    Distillation, early-exit and mixture-of-experts training, mixed precision,
    the LR range test and the training curves of the book all run through it,
    with their own ``batch_loss`` or ``after_step``.

    Args:
        model: trained in place (moved to ``device``); left in train mode.
        train_loader: yields ``(inputs, labels)`` or longer tuples
            (``batch_loss`` sees all of it; with a ``batch_loss``, a one-item
            ``(inputs,)`` tuple is accepted too).
        epochs: number of passes over ``train_loader``.
        optimizer: default ``Adam(model.parameters(), lr)``.
        lr: learning rate of the default optimizer.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy.
        batch_loss: ``batch_loss(model, batch)`` gives the loss of one batch
            (its tensors on ``device``), for losses that need more than logits
            and labels (a teacher, several exits, an auxiliary term). Default:
            ``loss_fn(output_fn(model(batch[0])), batch[1])``. Not together
            with ``loss_fn``.
        val_loader: if given, validation accuracy is measured after each epoch.
        scheduler: an LR scheduler stepped after every optimizer step.
        device: default: the device of the model's parameters.
        after_step: called with the global step number after each optimizer
            step (pruning schedules, evaluations); returning ``True`` stops
            training after that step.
        max_steps: stop after this many optimizer steps (default: all epochs).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the loss is
            computed under ``torch.autocast`` in that dtype, the parameters
            stay float32.
        grad_scaler: a ``torch.amp.GradScaler`` (for fp16): the loss is
            scaled before backward, and a step with inf/NaN gradients is skipped.
        history: a :class:`History` to continue (its steps count on); default new.
        progress: show a tqdm progress bar; default: only in an interactive
            session (a terminal or a Jupyter kernel; tqdm's ``TQDM_DISABLE=1``
            turns it off there).
        desc: the progress bar's label.
        output_fn: maps ``model(x)`` to the logits given to ``loss_fn`` (and to
            the validation accuracy); default :func:`logits_of` (a tensor as
            is; the ``logits`` of a dict, ``ModelOutput`` or dataclass; the
            first element of a tuple).

    Raises:
        ValueError: ``train_loader`` yields no batch, or a batch without labels
            for the default loss; both ``loss_fn`` and
            ``batch_loss``; an unknown ``precision``;
            :class:`NonFiniteLossError` (a ``ValueError``) when the loss
            becomes NaN or infinite without a ``grad_scaler`` (training stops there).
        TypeError: ``train_loader`` yields something other than tuples (a
            bare input tensor); the model's output holds no logits tensor
            (pass ``output_fn``), or an argument of the wrong type.
    """
    check_module(model, "model")
    epochs = check_int(epochs, "epochs", min_value=1)
    check_float(lr, "lr", min_value=0.0, min_inclusive=False)
    progress = _interactive() if progress is None else check_bool(progress, "progress")
    check_callable(loss_fn, "loss_fn", optional=True)
    check_callable(batch_loss, "batch_loss", optional=True)
    check_callable(after_step, "after_step", optional=True)
    if loss_fn is not None and batch_loss is not None:
        raise ValueError("pass loss_fn or batch_loss, not both")
    if max_steps is not None:
        max_steps = check_int(max_steps, "max_steps", min_value=1)
    dtype = resolve_precision(precision)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if grad_scaler is not None and not isinstance(grad_scaler, torch.amp.GradScaler):
        raise TypeError(f"grad_scaler must be a torch.amp.GradScaler, got "
                        f"{type(grad_scaler).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    _check_not_empty(train_loader, "train_loader")
    get_logits = _output_fn(output_fn)
    labelled = batch_loss is None  # the default loss reads batch[1]
    batch_loss = batch_loss or _default_batch_loss(loss_fn or nn.functional.cross_entropy,
                                                   get_logits)
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history = history if history is not None else History()
    start, steps = time.perf_counter(), 0
    total = epochs * len(train_loader) if hasattr(train_loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    # In a terminal the bar refreshes every second. In a notebook (or a built
    # book page) every refresh stays as a line of output, so there it
    # refreshes every 15 s: a short run prints its start and its end.
    tty = sys.stderr.isatty()
    stop = False
    with tqdm(total=total, desc=desc, disable=not progress, leave=True,
              mininterval=1.0 if tty else 15.0) as bar:
        for epoch in range(epochs):
            model.train()
            running, count, epoch_steps = 0.0, 0, 0
            for raw in train_loader:
                batch = _device_batch(raw, device, "train_loader", labelled=labelled)
                t0 = time.perf_counter()
                loss = _train_step(model, optimizer, batch, batch_loss, dtype, grad_scaler,
                                   history.steps, device.type)
                if scheduler is not None:
                    scheduler.step()
                value = loss.item()  # waits for the device, so the time below is real
                history.train_seconds += time.perf_counter() - t0
                n = len(batch[0])
                history.steps += 1
                history.examples += n
                history.step_loss.append(value)
                running, count, epoch_steps, steps = running + value * n, count + n, \
                    epoch_steps + 1, steps + 1
                bar.update(1)
                stop = (after_step is not None and after_step(history.steps) is True
                        or steps == max_steps)
                if stop:
                    break
            if epoch_steps == 0:
                raise _no_batch("train_loader")
            history.train_loss.append(running / max(count, 1))
            postfix = {"epoch": epoch + 1, "loss": f"{history.train_loss[-1]:.4f}"}
            if val_loader is not None:
                history.val_acc.append(evaluate(model, val_loader, device,
                                                output_fn=output_fn))
                postfix["val_acc"] = f"{history.val_acc[-1]:.4f}"
            bar.set_postfix(postfix, refresh=tty)
            if stop:
                break
    history.seconds += time.perf_counter() - start
    return history
