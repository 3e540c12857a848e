"""When to prune while training: one-shot and polynomial schedules, the callback, the loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .._checks import check_choice, check_float, check_int, check_module
from .unstructured import _get_importance, check_sparsity, prune_, sparsity


# --------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class ConstantSparsity:
    """One-shot pruning: ``target_sparsity`` at ``begin_step`` (TF-MOT's ``ConstantSparsity``)."""

    target_sparsity: float
    begin_step: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.target_sparsity, "target_sparsity")
        check_int(self.begin_step, "begin_step", min_value=0)

    def __call__(self, step: int) -> float:
        return self.target_sparsity if step >= self.begin_step else 0.0

    def should_prune(self, step: int) -> bool:
        return step == self.begin_step


@dataclass(frozen=True)
class PolynomialDecay:
    r"""Sparsity that rises from ``initial`` to ``final`` (Zhu & Gupta 2017).

    .. math:: s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^{p}

    for ``begin_step`` :math:`t_0 \le t \le` ``end_step`` :math:`t_1`, with
    :math:`p = 3`: prune fast while many redundant weights remain, slowly
    near the end. Masks are updated every ``frequency`` steps, and at ``end_step``.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        check_sparsity(self.final_sparsity, "final_sparsity")
        check_int(self.begin_step, "begin_step", min_value=0)
        check_int(self.end_step, "end_step", min_value=0)
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be after begin_step "
                             f"({self.begin_step})")
        check_float(self.power, "power", min_value=0.0, min_inclusive=False)
        check_int(self.frequency, "frequency", min_value=1)

    def __call__(self, step: int) -> float:
        t = min(max(step, self.begin_step), self.end_step)
        frac = (t - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - frac) ** self.power

    def should_prune(self, step: int) -> bool:
        inside = self.begin_step <= step <= self.end_step
        return inside and ((step - self.begin_step) % self.frequency == 0
                           or step == self.end_step)


@runtime_checkable
class Schedule(Protocol):
    """What a pruning schedule is (TF-MOT's ``PruningSchedule``): any object with
    these two methods, :class:`ConstantSparsity` and :class:`PolynomialDecay` or
    your own."""

    def __call__(self, step: int) -> float:
        """The target sparsity at optimizer step ``step``."""

    def should_prune(self, step: int) -> bool:
        """Whether to prune at ``step``."""


def _check_schedule(schedule: object) -> Schedule:
    """``schedule`` if it is a :class:`Schedule`, else a ``TypeError`` naming the argument."""
    if not isinstance(schedule, Schedule):
        raise TypeError("schedule must be a Schedule (ConstantSparsity, PolynomialDecay, or an "
                        "object with __call__(step) -> sparsity and should_prune(step)), got "
                        f"{type(schedule).__name__}")
    return schedule


class PruningCallback:
    """``after_step`` for :func:`companion.train.fit`: prune to ``schedule(step)`` when due.

    Masks live between updates, so the zeros stay zero while training.
    Create the optimizer *before* or *after* wrapping: the reparametrization
    keeps the same ``Parameter`` object (renamed ``weight_orig``).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, *,
                 importance: str | Callable[..., torch.Tensor] = "magnitude",
                 scope: str = "local") -> None:
        self.model = check_module(model, "model")
        _check_schedule(schedule)
        _get_importance(importance)  # validates now, not at the first pruning step
        self.importance = importance
        self.scope = check_choice(scope, "scope", ("local", "global"))
        self.schedule = schedule
        self.log: list[tuple[int, float]] = []

    def __call__(self, step: int) -> None:
        if self.schedule.should_prune(step):
            prune_(self.model, self.schedule(step), importance=self.importance, scope=self.scope)
            self.log.append((step, sparsity(self.model)))


def iterative_prune_(model: nn.Module, sparsities: Sequence[float],
                     fine_tune: Callable[[nn.Module], object], *,
                     importance: str | Callable[..., torch.Tensor] = "magnitude",
                     scope: str = "local") -> nn.Module:
    """Han et al.'s loop, in place: for each sparsity, prune then ``fine_tune(model)``."""
    if not sparsities:
        raise ValueError("sparsities must not be empty")
    for s in sparsities:
        prune_(model, s, importance=importance, scope=scope)
        fine_tune(model)
    return model
