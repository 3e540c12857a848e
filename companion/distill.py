"""Knowledge distillation (Hinton, Vinyals and Dean 2015), with optional hints.

A *trained* teacher's logits, softened by a temperature ``T``, become soft
targets for a student. The loss mixes two terms:

.. math::

    L = \\alpha\\, T^2\\, \\mathrm{KL}\\big(\\sigma(z_t/T)\\,\\|\\,\\sigma(z_s/T)\\big)
        + (1-\\alpha)\\, \\mathrm{CE}(z_s, y)

``alpha`` weights the soft (teacher) term, ``1 - alpha`` the hard-label term.
The factor ``T**2`` keeps the soft term's gradient on the same scale whatever
``T`` is (its gradient shrinks like ``1/T**2`` otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_int, check_module, check_tensor
from .train import History, _batches, default_device, evaluate

__all__ = ["KDConfig", "Hint", "soft_targets", "kd_loss", "hint_loss", "distill"]


@dataclass(frozen=True)
class KDConfig:
    """Distillation settings.

    Attributes:
        temperature: softening temperature ``T > 0`` (Hinton et al. use 2-20).
        alpha: weight of the soft (teacher) term in [0, 1]; ``1 - alpha`` weights
            the hard-label cross-entropy.
    """

    temperature: float = 4.0
    alpha: float = 0.9

    def __post_init__(self) -> None:
        check_float(self.temperature, "temperature", min_value=0.0, min_inclusive=False)
        check_float(self.alpha, "alpha", min_value=0.0, max_value=1.0)


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher probabilities softened by ``temperature``: ``softmax(z / T)``."""
    check_tensor(teacher_logits, "teacher_logits", floating=True)
    t = check_float(temperature, "temperature", min_value=0.0, min_inclusive=False)
    return F.softmax(teacher_logits / t, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            labels: torch.Tensor | None, *, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s distillation loss (mean over the batch).

    Args:
        student_logits: ``(B, C)`` raw scores of the student (no softmax).
        teacher_logits: ``(B, C)`` raw scores of the teacher (detached here).
        labels: ``(B,)`` class indices; may be None only when ``alpha == 1``.
        temperature: ``T > 0``, applied to *both* teacher and student logits.
        alpha: weight of the soft term, in [0, 1]; ``1 - alpha`` weights the
            hard-label cross-entropy at temperature 1.

    Returns:
        ``alpha * T**2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)``.

    Raises:
        ValueError: ``temperature <= 0``, ``alpha`` outside [0, 1], logits of
            different shapes, or labels missing/mismatched while ``alpha < 1``.
        TypeError: an argument is not a tensor / real number.
    """
    check_tensor(student_logits, "student_logits", floating=True, finite=False)
    check_tensor(teacher_logits, "teacher_logits", floating=True)
    t = check_float(temperature, "temperature", min_value=0.0, min_inclusive=False)
    a = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError("student_logits and teacher_logits must both be (batch, classes), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    p_teacher = F.softmax(teacher_logits.detach() / t, dim=-1)
    soft = F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t
    if a == 1.0:
        return soft
    if labels is None:
        raise ValueError("labels are required when alpha < 1 (the hard-label term)")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must have shape ({student_logits.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    return a * soft + (1.0 - a) * F.cross_entropy(student_logits, labels)


@dataclass
class Hint:
    """Feature ("hint") distillation, FitNets-style: match an inner activation.

    Attributes:
        student_layer: name (as in ``named_modules``) of the student's layer.
        teacher_layer: name of the teacher's layer.
        regressor: maps the student's activation to the teacher's shape (trained).
        weight: weight of the mean-squared error added to the KD loss.
    """

    student_layer: str
    teacher_layer: str
    regressor: nn.Module
    weight: float = 1.0


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              regressor: nn.Module) -> torch.Tensor:
    """Mean-squared error between ``regressor(student_features)`` and the teacher's features."""
    check_module(regressor, "regressor")
    mapped = regressor(student_features)
    if mapped.shape != teacher_features.shape:
        raise ValueError(f"regressor maps student features to {tuple(mapped.shape)}, "
                         f"but teacher features are {tuple(teacher_features.shape)}")
    return F.mse_loss(mapped, teacher_features.detach())


def _capture(model: nn.Module, layer: str, store: dict) -> torch.utils.hooks.RemovableHandle:
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"no layer named {layer!r} in {type(model).__name__}")
    return modules[layer].register_forward_hook(lambda m, i, o: store.__setitem__(layer, o))


def distill(student: nn.Module, teacher: nn.Module, train_loader: Iterable, *,
            config: KDConfig = KDConfig(), epochs: int = 1,
            optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
            val_loader: Iterable | None = None, scheduler: object | None = None,
            hint: Hint | None = None, device: torch.device | str | None = None) -> History:
    """Train ``student`` in place on the KD loss; the teacher stays frozen.

    The teacher runs in eval mode under ``torch.no_grad()``: it receives no
    gradient and its parameters, buffers and mode are left as they were.

    Args:
        student: trained in place.
        teacher: an already *trained* model with the same output classes.
        train_loader: yields ``(inputs, labels)``.
        config: temperature and alpha (see :class:`KDConfig`).
        epochs: passes over ``train_loader``.
        optimizer: default ``Adam`` over the student (and the hint regressor).
        lr: learning rate of the default optimizer.
        val_loader: if given, student accuracy after each epoch.
        scheduler: an LR scheduler stepped after every optimizer step.
        hint: optional feature distillation term.
        device: default :func:`companion.train.default_device`.

    Returns:
        The student's :class:`~companion.train.History`.

    Raises:
        ValueError: the loss becomes non-finite, or a hint layer does not exist.
    """
    check_module(student, "student")
    check_module(teacher, "teacher")
    if student is teacher:
        raise ValueError("student and teacher must be different modules")
    epochs = check_int(epochs, "epochs", min_value=1)
    device = torch.device(device) if device is not None else default_device()
    student.to(device)
    teacher.to(device)
    params = list(student.parameters())
    hooks, feats_s, feats_t = [], {}, {}
    if hint is not None:
        hint.regressor.to(device)
        params += list(hint.regressor.parameters())
        hooks = [_capture(student, hint.student_layer, feats_s),
                 _capture(teacher, hint.teacher_layer, feats_t)]
    optimizer = optimizer or torch.optim.Adam(params, lr=lr)
    was_training = teacher.training
    teacher.eval()
    history, start = History(), time.perf_counter()
    try:
        for _ in range(epochs):
            student.train()
            running, count = 0.0, 0
            for x, y in _batches(train_loader, device):
                with torch.no_grad():
                    t_logits = teacher(x)
                s_logits = student(x)
                loss = kd_loss(s_logits, t_logits, y, temperature=config.temperature,
                               alpha=config.alpha)
                if hint is not None:
                    loss = loss + hint.weight * hint_loss(
                        feats_s[hint.student_layer], feats_t[hint.teacher_layer], hint.regressor)
                if not torch.isfinite(loss):
                    raise ValueError(f"loss became {loss.item()} at step {history.steps}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                history.steps += 1
                running, count = running + loss.item() * len(y), count + len(y)
            history.train_loss.append(running / max(count, 1))
            if val_loader is not None:
                history.val_acc.append(evaluate(student, val_loader, device))
    finally:
        teacher.train(was_training)
        for h in hooks:
            h.remove()
    history.seconds = time.perf_counter() - start
    return history
