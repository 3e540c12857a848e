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

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
)

from ._checks import check_float, check_int, check_module, check_tensor, evaluating
from .train import History, OutputFn, fit
from .train.evaluation import _model_device, _output_fn

__all__ = ["KDConfig", "Hint", "kd_loss", "hint_loss", "cache_teacher_logits",
           "distill_"]


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
            different shapes, or labels missing, of the wrong shape or outside
            ``[0, C)`` while ``alpha < 1``.
        TypeError: an argument is not a tensor / real number, or ``labels`` is
            not an integer tensor.
    """
    check_tensor(student_logits, "student_logits", floating=True)
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
    _check_labels(labels, student_logits.shape[0], student_logits.shape[1])
    return a * soft + (1.0 - a) * F.cross_entropy(student_logits, labels)


def _check_labels(labels: torch.Tensor, batch: int, classes: int) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got "
                        f"{type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got dtype "
                        f"{labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"labels must be class indices in [0, {classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")


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

    def __post_init__(self) -> None:
        for name in ("student_layer", "teacher_layer"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str (a name from named_modules), got "
                                f"{type(getattr(self, name)).__name__}")
        check_module(self.regressor, "regressor")
        check_float(self.weight, "weight", min_value=0.0)


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              regressor: nn.Module) -> torch.Tensor:
    """Mean-squared error between ``regressor(student_features)`` and the teacher's features.

    Raises:
        TypeError: the features are not floating-point tensors, ``regressor`` is
            not a module or does not return a tensor.
        ValueError: ``regressor`` cannot take ``student_features`` (shape or
            dtype), or maps them to another shape than ``teacher_features``.
    """
    check_tensor(student_features, "student_features", floating=True, finite=False)
    check_tensor(teacher_features, "teacher_features", floating=True, finite=False)
    check_module(regressor, "regressor")
    try:
        mapped = regressor(student_features)
    except RuntimeError as e:
        raise ValueError(f"regressor cannot map student_features of shape "
                         f"{tuple(student_features.shape)} and dtype {student_features.dtype}: "
                         f"{e}") from e
    if not isinstance(mapped, torch.Tensor):
        raise TypeError(f"regressor must return a torch.Tensor, got {type(mapped).__name__}")
    if mapped.shape != teacher_features.shape:
        raise ValueError(f"regressor maps student features to {tuple(mapped.shape)}, "
                         f"but teacher features are {tuple(teacher_features.shape)}")
    return F.mse_loss(mapped, teacher_features.detach())


class _WithLogits(Dataset):
    """``dataset[i]`` followed by row ``i`` of precomputed teacher logits."""

    def __init__(self, dataset: Dataset, logits: torch.Tensor) -> None:
        self.dataset, self.logits = dataset, logits

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index: int | list[int]) -> tuple:
        return (*self.dataset[index], self.logits[index])


def cache_teacher_logits(teacher: nn.Module, loader: DataLoader, *, batch_size: int = 1000,
                         device: torch.device | str | None = None,
                         output_fn: OutputFn | None = None) -> DataLoader:
    """Run a frozen teacher once over ``loader``'s dataset and keep its logits.

    The teacher of :func:`distill_` is frozen, so its logits for a training
    image are the same at every epoch: computing them once replaces one
    teacher forward pass per student step by a table look-up. The returned
    loader yields ``(inputs, labels, teacher_logits)`` batches, drawn with the
    same batch size, sampler and generator as ``loader`` (two loaders made
    with the same seed give their batches in the same order). :func:`distill_`
    accepts it in place of ``loader`` and then runs the teacher on the first
    batch only, to check the cache.

    The cache is valid only while the teacher and the inputs do not change: a
    dataset that augments its images at random (a new crop at every epoch)
    needs the teacher at every step instead.

    Args:
        teacher: the trained teacher; it runs in eval mode under ``no_grad``
            and every submodule's mode is restored afterwards (not modified).
        loader: a ``DataLoader`` over a map-style dataset of ``(input, label)``
            pairs.
        batch_size: batch size of the single pass that computes the logits.
        device: where the teacher runs (default: its parameters' device).
        output_fn: maps the teacher's output to its logits; default
            :func:`companion.train.logits_of`.

    Returns:
        A ``DataLoader`` over the same examples, each followed by the teacher's
        float32 logits (kept on the CPU).

    Raises:
        TypeError: ``teacher`` is not a module, ``loader`` not a ``DataLoader``
            over a map-style dataset, or ``batch_size`` not an int.
        ValueError: ``batch_size`` < 1, the dataset is empty, or its items are
            not ``(input, label)`` pairs.
    """
    check_module(teacher, "teacher")
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader must be a torch DataLoader, got {type(loader).__name__}")
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise TypeError("loader must draw from a map-style dataset (with __len__ and "
                        f"__getitem__), got {type(dataset).__name__}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    get_logits = _output_fn(output_fn)
    if len(dataset) == 0:
        raise ValueError("loader's dataset is empty")
    first = dataset[0]
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise ValueError("loader's dataset must yield (input, label) pairs, got an item of "
                         f"{len(first) if isinstance(first, (tuple, list)) else 1} part(s)")
    device = torch.device(device) if device is not None else next(
        (p.device for p in teacher.parameters()), torch.device("cpu"))
    by_index = loader.batch_size is None and loader.batch_sampler is None
    if by_index:  # a sampler of index lists (companion.data's training loaders)
        ordered = DataLoader(dataset, batch_size=None, sampler=BatchSampler(
            SequentialSampler(dataset), batch_size, drop_last=False))
    else:
        ordered = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                             collate_fn=loader.collate_fn)
    chunks = []
    with evaluating(teacher), torch.no_grad():
        for x, _ in ordered:
            chunks.append(get_logits(teacher(x.to(device))).float().cpu())
    logits = torch.cat(chunks)
    if logits.dim() != 2 or len(logits) != len(dataset):
        raise ValueError(f"teacher must return (batch, classes) logits, got {tuple(logits.shape)}")
    cached = _WithLogits(dataset, logits)
    if by_index:
        return DataLoader(cached, batch_size=None, sampler=loader.sampler,
                          generator=loader.generator)
    if loader.batch_size is None:  # the loader was built with its own batch_sampler
        return DataLoader(cached, batch_sampler=loader.batch_sampler, generator=loader.generator)
    return DataLoader(cached, batch_size=loader.batch_size, sampler=loader.sampler,
                      drop_last=loader.drop_last, generator=loader.generator)


def _check_cache(teacher: nn.Module, x: torch.Tensor, cached: torch.Tensor,
                 get_logits: OutputFn) -> None:
    with torch.no_grad():
        fresh = get_logits(teacher(x)).float()
    scale = max(1.0, cached.abs().max().item())
    if fresh.shape != cached.shape or not torch.allclose(fresh, cached.float(), rtol=1e-3,
                                                         atol=1e-3 * scale):
        diff = (fresh - cached).abs().max().item() if fresh.shape == cached.shape else "shape"
        raise ValueError("train_loader's cached teacher_logits do not match the teacher "
                         f"(max difference {diff}): re-run cache_teacher_logits after "
                         "changing the teacher, and cache only inputs that are not augmented")


def _capture(model: nn.Module, layer: str, store: dict) -> torch.utils.hooks.RemovableHandle:
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"no layer named {layer!r} in {type(model).__name__}")
    return modules[layer].register_forward_hook(lambda m, i, o: store.__setitem__(layer, o))


def distill_(student: nn.Module, teacher: nn.Module, train_loader: Iterable, *,
             config: KDConfig = KDConfig(), epochs: int = 1,
             optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
             val_loader: Iterable | None = None, scheduler: object | None = None,
             hint: Hint | None = None, device: torch.device | str | None = None,
             output_fn: OutputFn | None = None) -> History:
    """Train ``student`` in place on the KD loss with :func:`companion.train.fit`;
    the teacher stays frozen.

    The teacher runs in eval mode under ``torch.no_grad()``: it receives no
    gradient and its parameters, buffers and mode are left as they were.

    A ``train_loader`` made by :func:`cache_teacher_logits` yields the
    teacher's logits with each batch: the teacher then runs on the first batch
    only, to check that the cached logits are its own (``ValueError`` if not),
    and every step costs one student pass instead of a teacher and a student
    pass. With a ``hint`` the teacher's inner features are needed at every
    step, so a cached loader is refused.

    Args:
        student: trained in place.
        teacher: an already *trained* model with the same output classes.
        train_loader: yields ``(inputs, labels)``, or ``(inputs, labels,
            teacher_logits)`` batches from :func:`cache_teacher_logits`.
        config: temperature and alpha (see :class:`KDConfig`).
        epochs: passes over ``train_loader``.
        optimizer: default ``Adam`` over the student (and the hint regressor).
        lr: learning rate of the default optimizer.
        val_loader: if given, student accuracy after each epoch.
        scheduler: an LR scheduler stepped after every optimizer step.
        hint: optional feature distillation term.
        device: default: the student's device.
        output_fn: maps the output of the student and of the teacher to logits
            (models that return a dict, a HuggingFace ``ModelOutput``, a
            dataclass or a tuple); default :func:`companion.train.logits_of`.

    Returns:
        The student's :class:`~companion.train.History`.

    Raises:
        ValueError: ``train_loader`` yields no batch, the loss becomes
            non-finite, a hint layer does not exist, the cached logits do not
            match the teacher, or a hint is combined with cached logits.
        TypeError: an argument of the wrong type, or a model output without a
            logits tensor (pass ``output_fn``).
    """
    check_module(student, "student")
    check_module(teacher, "teacher")
    if student is teacher:
        raise ValueError("student and teacher must be different modules")
    if not isinstance(config, KDConfig):
        raise TypeError(f"config must be a KDConfig, got {type(config).__name__}")
    if hint is not None and not isinstance(hint, Hint):
        raise TypeError(f"hint must be a Hint or None, got {type(hint).__name__}")
    get_logits = _output_fn(output_fn)
    device = torch.device(device) if device is not None else _model_device(student)
    student.to(device)
    teacher.to(device)
    params = list(student.parameters())
    hooks, feats_s, feats_t = [], {}, {}
    if hint is not None:
        hint.regressor.to(device)
        params += list(hint.regressor.parameters())
        hooks = [_capture(student, hint.student_layer, feats_s),
                 _capture(teacher, hint.teacher_layer, feats_t)]
    if optimizer is None:
        check_float(lr, "lr", min_value=0.0, min_inclusive=False)
        optimizer = torch.optim.Adam(params, lr=lr)
    checked = False

    def batch_loss(model: nn.Module, batch: tuple) -> torch.Tensor:
        nonlocal checked
        x, y = batch[0], batch[1]
        if len(batch) == 3:  # (inputs, labels, cached teacher logits)
            if hint is not None:
                raise ValueError("hint needs the teacher's features at every step: "
                                 "pass a train_loader without cached logits")
            t_logits = batch[2]
            if not checked:
                _check_cache(teacher, x, t_logits, get_logits)
                checked = True
        else:
            with torch.no_grad():
                t_logits = get_logits(teacher(x))
        loss = kd_loss(get_logits(model(x)), t_logits, y,
                       temperature=config.temperature, alpha=config.alpha)
        if hint is not None:
            loss = loss + hint.weight * hint_loss(
                feats_s[hint.student_layer], feats_t[hint.teacher_layer], hint.regressor)
        return loss

    try:
        with evaluating(teacher):
            return fit(student, train_loader, epochs=epochs, optimizer=optimizer,
                       batch_loss=batch_loss, val_loader=val_loader, scheduler=scheduler,
                       device=device, progress=False, desc="distill", output_fn=output_fn)
    finally:
        for h in hooks:
            h.remove()
