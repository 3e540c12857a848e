"""Choosing the learning rate: range test, schedules, and fair multi-seed comparisons.

* :func:`lr_range_test` (Smith 2017): raise the LR exponentially over a few
  hundred steps, watch the smoothed loss, stop when it diverges, suggest an LR.
* :func:`make_schedule`: warm-up, step, cosine and one-cycle schedules built
  from ``torch.optim.lr_scheduler``.
* :func:`seed_sweep`: train the same recipe with several seeds and report
  final and best validation accuracy (mean ± std) and the compute spent.
* :func:`training_curve_`: train once, scoring validation accuracy every few
  optimizer steps, to read off the steps, examples and seconds a recipe needs
  to reach a target accuracy (comparisons of optimizers and batch sizes).
* :func:`scaled_lr`: the linear (or square-root) scaling rule that adapts a
  learning rate tuned at one batch size to another.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from matplotlib.axes import Axes
from torch import nn

from ._checks import check_callable, check_choice, check_float, check_int, check_module
from .train import History, NonFiniteLossError, clone, evaluate, fit, set_seed

__all__ = ["RangeTestReport", "lr_range_test", "plot_range_test", "make_schedule",
           "SweepReport", "seed_sweep", "TrainingCurve", "training_curve_", "scaled_lr"]

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


def _adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def _check_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return optimizer


# --------------------------------------------------------------------------- range test
@dataclass
class RangeTestReport:
    """What the range test saw.

    Attributes:
        lrs: learning rate of each step.
        losses: exponentially smoothed (bias-corrected) training loss at each step.
        raw_losses: the unsmoothed loss of each step.
        stop_reason: ``"completed"``, ``"diverged"`` or ``"non-finite loss"``.
        suggested_lr: the LR at the smoothed-loss minimum divided by ``divisor``
            (None if fewer than 3 steps were usable).
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    stop_reason: str = "completed"
    suggested_lr: float | None = None

    @property
    def steps(self) -> int:
        """Optimizer steps taken (the compute the test cost)."""
        return len(self.lrs)

    @property
    def min_loss_lr(self) -> float:
        """LR at which the smoothed loss was lowest."""
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)]

    def as_row(self) -> dict[str, Any]:
        """The scalars: ``steps``, the LR range, ``stop_reason``, ``suggested_lr``,
        ``min_loss_lr`` and the lowest smoothed loss (NaN where no step was taken)."""
        nan = float("nan")
        return {"steps": self.steps, "first_lr": self.lrs[0] if self.lrs else nan,
                "last_lr": self.lrs[-1] if self.lrs else nan, "stop_reason": self.stop_reason,
                "suggested_lr": self.suggested_lr,
                "min_loss_lr": self.min_loss_lr if self.losses else nan,
                "min_loss": min(self.losses) if self.losses else nan}

    def __str__(self) -> str:
        lr = f"{self.suggested_lr:.3g}" if self.suggested_lr else "none"
        return (f"range test: {self.steps} steps, LR {self.lrs[0]:.2g} -> {self.lrs[-1]:.2g}, "
                f"stopped: {self.stop_reason}, suggested LR {lr}")


def lr_range_test(model: nn.Module, train_loader: Iterable, *, min_lr: float = 1e-6,
                  max_lr: float = 1.0, steps: int = 100,
                  optimizer_fn: OptimizerFactory = _adam,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                  smoothing: float = 0.9, diverge_factor: float = 4.0, divisor: float = 10.0,
                  device: torch.device | str | None = None) -> RangeTestReport:
    """Smith's learning-rate range test on a copy of ``model`` (``model`` is not changed).

    The LR grows geometrically from ``min_lr`` to ``max_lr`` over ``steps``
    optimizer steps (the loader is cycled if it is shorter). The test stops
    early when the smoothed loss exceeds ``diverge_factor`` times its minimum,
    or cleanly when a loss is NaN/inf (``stop_reason`` says which).

    Args:
        model: left untouched; a deep copy is trained.
        train_loader: yields ``(inputs, labels)``.
        min_lr: first learning rate (> 0).
        max_lr: last learning rate (> ``min_lr``).
        steps: number of optimizer steps (>= 3).
        optimizer_fn: ``optimizer_fn(params, lr)``; default Adam.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy.
        smoothing: exponential smoothing factor in [0, 1).
        diverge_factor: stop once the smoothed loss exceeds this times its minimum.
        divisor: suggested LR = LR at the smoothed-loss minimum / ``divisor``.
        device: default: the model's device.

    Returns:
        A :class:`RangeTestReport`.

    Raises:
        ValueError: ``min_lr >= max_lr``, ``train_loader`` yields no batch, or
            another argument out of range.
    """
    check_module(model, "model")  # fit checks the loader and loss_fn
    check_callable(optimizer_fn, "optimizer_fn")
    min_lr = check_float(min_lr, "min_lr", min_value=0.0, min_inclusive=False)
    max_lr = check_float(max_lr, "max_lr", min_value=0.0, min_inclusive=False)
    if min_lr >= max_lr:
        raise ValueError(f"min_lr ({min_lr}) must be smaller than max_lr ({max_lr})")
    steps = check_int(steps, "steps", min_value=3)
    smoothing = check_float(smoothing, "smoothing", min_value=0.0, max_value=1.0,
                            max_inclusive=False)
    check_float(diverge_factor, "diverge_factor", min_value=1.0, min_inclusive=False)
    check_float(divisor, "divisor", min_value=0.0, min_inclusive=False)
    net = clone(model)
    optimizer = optimizer_fn(net.parameters(), min_lr)
    gamma = (max_lr / min_lr) ** (1.0 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    result, history = RangeTestReport(), History()
    avg, lr = 0.0, optimizer.param_groups[0]["lr"]

    def record(step: int) -> bool:
        nonlocal avg, lr
        loss = history.step_loss[-1]
        avg = smoothing * avg + (1 - smoothing) * loss
        result.lrs.append(lr)  # the LR this step used; the scheduler has moved on
        lr = optimizer.param_groups[0]["lr"]
        result.raw_losses.append(loss)
        result.losses.append(avg / (1 - smoothing ** len(result.lrs)))
        if result.losses[-1] > diverge_factor * min(result.losses):
            result.stop_reason = "diverged"
            return True
        return False

    try:  # epochs=steps cycles a loader shorter than steps
        fit(net, train_loader, epochs=steps, max_steps=steps, optimizer=optimizer,
            scheduler=scheduler, loss_fn=loss_fn, after_step=record, history=history,
            device=device, progress=False, desc="LR range test")
    except NonFiniteLossError:
        result.stop_reason = "non-finite loss"
    if result.steps >= 3:
        result.suggested_lr = result.min_loss_lr / divisor
    return result


def plot_range_test(result: RangeTestReport, *, ax: Axes | None = None) -> Axes:
    """Smoothed loss against LR (log x), with the suggested LR marked."""
    from .plot import line_plot

    if result.steps == 0:
        raise ValueError("result has no steps to plot")
    ax = line_plot(result.lrs, {"smoothed loss": result.losses}, xlabel="learning rate",
                   ylabel="training loss", logx=True, marker="", ax=ax,
                   title="learning-rate range test")
    if result.suggested_lr:
        ax.axvline(result.suggested_lr, color="tab:red", linestyle="--",
                   label=f"suggested {result.suggested_lr:.2g}")
        ax.legend()
    return ax


# --------------------------------------------------------------------------- schedules
def make_schedule(optimizer: torch.optim.Optimizer, kind: str, *, total_steps: int,
                  warmup_steps: int = 0, max_lr: float | None = None, step_size: int | None = None,
                  gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """An LR schedule stepped once per optimizer step (as :func:`companion.train.fit` does).

    Args:
        optimizer: its current LR is the peak LR (except for ``"onecycle"``).
        kind: ``"constant"``, ``"step"`` (times ``gamma`` every ``step_size``
            steps), ``"cosine"`` (to 0 at ``total_steps``) or ``"onecycle"``
            (Smith's one-cycle policy up to ``max_lr``).
        total_steps: optimizer steps of the whole run.
        warmup_steps: linear warm-up from 1% of the LR, prepended to
            ``constant``/``step``/``cosine``.
        max_lr: peak LR of ``"onecycle"`` (> 0; default: the optimizer's LR).
        step_size: period of ``"step"`` (>= 1; default: a third of the run).
        gamma: decay factor of ``"step"`` (> 0, finite).

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: unknown ``kind``, steps out of range, a non-positive or
            non-finite ``gamma``/``max_lr``, or ``step_size`` < 1.
    """
    from torch.optim import lr_scheduler as S

    _check_optimizer(optimizer)
    check_choice(kind, "kind", ("constant", "step", "cosine", "onecycle"))
    total_steps = check_int(total_steps, "total_steps", min_value=1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", min_value=0,
                             max_value=total_steps - 1)
    gamma = check_float(gamma, "gamma", min_value=0.0, min_inclusive=False)
    if max_lr is not None:
        max_lr = check_float(max_lr, "max_lr", min_value=0.0, min_inclusive=False)
    if step_size is not None:
        step_size = check_int(step_size, "step_size", min_value=1)
    if kind == "onecycle":
        peak = max_lr if max_lr is not None else optimizer.param_groups[0]["lr"]
        return S.OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps)
    rest = total_steps - warmup_steps
    if kind == "constant":
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif kind == "step":
        period = step_size if step_size is not None else max(1, rest // 3)
        main = S.StepLR(optimizer, step_size=period, gamma=gamma)
    else:
        main = S.CosineAnnealingLR(optimizer, T_max=rest)
    if warmup_steps == 0:
        return main
    warm = S.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup_steps)
    return S.SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


# --------------------------------------------------------------------------- sweeps
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class SweepReport:
    """One training recipe run with several seeds."""

    label: str
    seeds: list[int]
    histories: list[History]

    @property
    def final_acc(self) -> tuple[float, float]:
        """Mean and standard deviation of the last-epoch validation accuracy."""
        return _mean_std([h.final_val_acc for h in self.histories])

    @property
    def best_acc(self) -> tuple[float, float]:
        """Mean and standard deviation of the best validation accuracy over epochs."""
        return _mean_std([h.best_val_acc for h in self.histories])

    @property
    def first_epoch_acc(self) -> tuple[float, float]:
        """Mean and std of the *first* epoch's accuracy (the unfair number; for contrast)."""
        return _mean_std([h.val_acc[0] for h in self.histories])

    @property
    def steps(self) -> int:
        """Optimizer steps of one run (all seeds take the same number)."""
        return self.histories[0].steps

    @property
    def seconds(self) -> float:
        """Mean wall time of one run."""
        return statistics.fmean(h.seconds for h in self.histories)

    def as_row(self) -> dict[str, Any]:
        """A table row: final and best accuracy (mean ± std) and compute."""
        (fm, fs), (bm, bs) = self.final_acc, self.best_acc
        return {"recipe": self.label, "seeds": len(self.seeds),
                "final acc": f"{fm:.4f} ± {fs:.4f}", "best acc": f"{bm:.4f} ± {bs:.4f}",
                "steps": self.steps, "seconds": round(self.seconds, 2)}


def seed_sweep(label: str, make_model: Callable[[], nn.Module], train_loader: Iterable,
               val_loader: Iterable, *, seeds: Sequence[int] = (0, 1, 2), epochs: int = 3,
               lr: float = 1e-3, optimizer_fn: OptimizerFactory = _adam,
               schedule: Callable[[torch.optim.Optimizer, int], Any] | None = None,
               device: torch.device | str | None = None) -> SweepReport:
    """Train a fresh model per seed and keep each run's :class:`~companion.train.History`.

    Args:
        label: name of the recipe in tables and plots.
        make_model: builds a fresh, untrained model (called after seeding).
        train_loader: training data.
        val_loader: validation data, scored after every epoch.
        seeds: at least two seeds, so that a standard deviation exists.
        epochs: epochs per run.
        lr: learning rate passed to ``optimizer_fn``.
        optimizer_fn: ``optimizer_fn(params, lr)``; default Adam.
        schedule: optional ``schedule(optimizer, total_steps)`` returning an LR scheduler.
        device: default: the model's device.

    Raises:
        ValueError: fewer than two seeds, or another argument out of range.
    """
    check_callable(make_model, "make_model")
    check_callable(optimizer_fn, "optimizer_fn")
    check_callable(schedule, "schedule", optional=True)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    if len(seeds) < 2:
        raise ValueError(f"seeds must hold at least 2 seeds for a spread, got {list(seeds)}")
    for i, seed in enumerate(seeds):
        check_int(seed, f"seeds[{i}]", min_value=0)
    check_float(lr, "lr", min_value=0.0, min_inclusive=False)
    epochs = check_int(epochs, "epochs", min_value=1)
    histories = []
    for seed in seeds:
        set_seed(seed)
        model = make_model()
        opt = optimizer_fn(model.parameters(), lr)
        total = epochs * len(train_loader)
        sched = schedule(opt, total) if schedule is not None else None
        histories.append(fit(model, train_loader, epochs=epochs, optimizer=opt, scheduler=sched,
                             val_loader=val_loader, device=device, progress=False))
    return SweepReport(label, list(seeds), histories)


# --------------------------------------------------------------------------- speed
@dataclass
class TrainingCurve:
    """Validation accuracy of one run, scored every few optimizer steps.

    The lists are aligned: entry ``i`` is the state after ``steps[i]``
    optimizer steps, i.e. after ``examples[i]`` training examples and
    ``seconds[i]`` of training wall time (forward, backward and update;
    loading batches and scoring the validation set are not included). The
    first entry is the untrained model.

    Attributes:
        label: name of the run in tables and plots.
        steps: optimizer steps taken at each evaluation.
        examples: training examples seen at each evaluation.
        seconds: training wall time at each evaluation.
        val_acc: validation accuracy at each evaluation.
    """

    label: str
    steps: list[int] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)

    def _first(self, target: float) -> int | None:
        check_float(target, "target", min_value=0.0, max_value=1.0)
        return next((i for i, a in enumerate(self.val_acc) if a >= target), None)

    def steps_to(self, target: float) -> int | None:
        """Optimizer steps at the first evaluation with accuracy >= ``target`` (None: never)."""
        i = self._first(target)
        return None if i is None else self.steps[i]

    def examples_to(self, target: float) -> int | None:
        """Training examples seen when the accuracy first reached ``target`` (None: never)."""
        i = self._first(target)
        return None if i is None else self.examples[i]

    def seconds_to(self, target: float) -> float | None:
        """Training seconds until the accuracy first reached ``target`` (None: never)."""
        i = self._first(target)
        return None if i is None else self.seconds[i]

    @property
    def final_acc(self) -> float:
        """Validation accuracy at the end of the run."""
        return self.val_acc[-1]

    @property
    def best_acc(self) -> float:
        """Best validation accuracy seen during the run."""
        return max(self.val_acc)


def training_curve_(model: nn.Module, train_loader: Iterable, val_loader: Iterable, *,
                    optimizer: torch.optim.Optimizer, epochs: int = 1, eval_every: int = 10,
                    scheduler: object | None = None,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    device: torch.device | str | None = None,
                    label: str = "") -> TrainingCurve:
    """Train ``model`` in place, scoring validation accuracy every ``eval_every`` steps.

    It is :func:`companion.train.fit` with an ``after_step`` that evaluates:
    before the first step, every ``eval_every`` steps and after the last one.
    The seconds are ``History.train_seconds``: the steps themselves, without
    loading batches or scoring. Use it to compare how fast recipes learn, in optimizer
    steps, training examples or seconds (:meth:`TrainingCurve.steps_to` and
    friends); give each recipe a fresh model built from the same seed.

    Args:
        model: trained in place (moved to ``device``).
        train_loader: yields ``(inputs, labels)``.
        val_loader: scored with :func:`companion.train.evaluate`.
        optimizer: built on ``model``'s parameters.
        epochs: passes over ``train_loader``.
        eval_every: optimizer steps between two evaluations.
        scheduler: an LR scheduler stepped after every optimizer step.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy.
        device: default: the model's device.
        label: the run's name.

    Returns:
        A :class:`TrainingCurve`.

    Raises:
        TypeError: ``model`` is not a module or ``optimizer`` not an optimizer.
        ValueError: ``epochs`` or ``eval_every`` < 1, ``train_loader`` yields no
            batch, or the loss becomes NaN or infinite (the message gives the
            step; lower the learning rate).
    """
    check_module(model, "model")
    _check_optimizer(optimizer)
    eval_every = check_int(eval_every, "eval_every", min_value=1)  # fit checks the rest
    curve, history = TrainingCurve(label), History()

    def record(step: int = 0) -> None:
        curve.steps.append(history.steps)
        curve.examples.append(history.examples)
        curve.seconds.append(history.train_seconds)
        curve.val_acc.append(evaluate(model, val_loader, device))  # restores train mode

    def after_step(step: int) -> None:
        if step % eval_every == 0:
            record()

    if device is not None:
        model.to(device)
    record()
    fit(model, train_loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
        loss_fn=loss_fn, device=device, after_step=after_step, history=history,
        progress=False, desc=label or "train")
    steps = history.steps
    if curve.steps[-1] != steps:
        record()
    return curve


def scaled_lr(base_lr: float, base_batch: int, batch: int, *, rule: str = "linear") -> float:
    r"""Learning rate for batch size ``batch``, given one tuned at ``base_batch``.

    ``"linear"`` (Goyal et al. 2017): :math:`\eta = \eta_0 \, B / B_0`, which keeps
    the step per training example, :math:`\eta / B`, constant. ``"sqrt"``:
    :math:`\eta = \eta_0 \sqrt{B / B_0}`, which keeps the variance of the
    gradient noise in one step, :math:`\eta^2 / B`, constant (a rule sometimes
    preferred for Adam).

    Raises:
        ValueError: a non-positive argument, or an unknown ``rule``.
    """
    base_lr = check_float(base_lr, "base_lr", min_value=0.0, min_inclusive=False)
    base_batch = check_int(base_batch, "base_batch", min_value=1)
    batch = check_int(batch, "batch", min_value=1)
    check_choice(rule, "rule", ("linear", "sqrt"))
    ratio = batch / base_batch
    return base_lr * (ratio if rule == "linear" else math.sqrt(ratio))
