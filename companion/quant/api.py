"""The entry points ``quantize_model_`` / ``quantize_model`` and their handler per config type."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_callable, check_module
from ..train import clone
from ..train.evaluation import _check_not_empty
from .backends import _dynamic, _static
from .configs import DynamicInt8Config, PTQConfig, QATConfig, StaticInt8Config, WeightOnlyConfig
from .modules import FilterFn, _become_, _weight_only_, calibrate_fake_quant_, prepare_qat_

Config = WeightOnlyConfig | DynamicInt8Config | StaticInt8Config | QATConfig | PTQConfig


@dataclass(frozen=True)
class _Handler:
    """How one config type is applied: ``apply(model, config, calibration, filter_fn)``."""

    apply: Callable[..., nn.Module]
    copies: bool            # returns a converted copy (else works in place)
    calibrated: bool        # needs calibration batches


def _ptq_(model: nn.Module, config: PTQConfig, calibration: Iterable,
          filter_fn: FilterFn | None) -> nn.Module:
    prepare_qat_(model, config.qat(), filter_fn=filter_fn)
    return calibrate_fake_quant_(model, calibration, config.num_batches)


# one handler per config type, the torchao pattern: a new config adds a line here
_HANDLERS: dict[type, _Handler] = {
    WeightOnlyConfig: _Handler(lambda m, c, _, f: _weight_only_(m, c, f), False, False),
    DynamicInt8Config: _Handler(_dynamic, True, False),
    StaticInt8Config: _Handler(_static, True, True),
    QATConfig: _Handler(lambda m, c, _, f: prepare_qat_(m, c, filter_fn=f), False, False),
    PTQConfig: _Handler(_ptq_, False, True),
}


def _handler(config: object, calibration: Iterable | None,
             filter_fn: FilterFn | None) -> _Handler:
    """The handler of ``config``, after checking what the public call was given."""
    if type(config) not in _HANDLERS:
        raise TypeError(f"config must be one of {[c.__name__ for c in _HANDLERS]}, "
                        f"got {type(config).__name__}")
    check_callable(filter_fn, "filter_fn", optional=True)
    handler = _HANDLERS[type(config)]
    name = type(config).__name__
    if not handler.calibrated:
        if calibration is not None:
            raise ValueError(f"calibration: {name} does not use calibration data")
        return handler
    if calibration is None:
        raise ValueError(f"calibration: {name} needs calibration batches (a DataLoader, or a "
                         "list of (inputs, labels) or input tensors)")
    if isinstance(calibration, (str, bytes, torch.Tensor)):
        raise TypeError("calibration must be an iterable of batches (a DataLoader, or a list "
                        f"of (inputs, labels) or input tensors), got {type(calibration).__name__}")
    _check_not_empty(calibration, "calibration")
    return handler


def quantize_model_(model: nn.Module, config: Config, *, calibration: Iterable | None = None,
                    filter_fn: FilterFn | None = None) -> nn.Module:
    """Quantize ``model`` in place (torchao's ``quantize_``) and return it.

    Args:
        model: a float model; for :class:`StaticInt8Config` an ``nn.Sequential``.
        config: one of the config dataclasses of this module. A
            :class:`QATConfig` prepares the model for training (see
            :func:`prepare_qat_`); a :class:`PTQConfig` prepares it and sets
            its ranges from ``calibration``.
        calibration: batches of ``(inputs, labels)`` or inputs, for the
            activation ranges of :class:`StaticInt8Config` and
            :class:`PTQConfig` (the configs hold no data); refused by the others.
        filter_fn: ``filter_fn(module, fqn) -> bool`` chooses the layers (as in
            torchao); default: every Linear/Conv layer the config can quantize.
            Eager static int8 refuses it (it converts the whole Sequential).

    The call is atomic: if it fails (a bad calibration loader, a layer it
    cannot quantize), ``model`` is left as it was.

    Raises:
        TypeError: ``model`` is not a module, an unknown ``config``, or
            ``calibration`` that is not an iterable of batches.
        ValueError: the model has no layer the config can quantize (or that
            ``filter_fn`` selects), ``calibration`` missing, refused or empty.
    """
    check_module(model, "model")
    handler = _handler(config, calibration, filter_fn)
    if handler.copies:
        return _become_(model, handler.apply(model, config, calibration, filter_fn))
    return handler.apply(model, config, calibration, filter_fn)


def quantize_model(model: nn.Module, config: Config, *, calibration: Iterable | None = None,
                   filter_fn: FilterFn | None = None) -> nn.Module:
    """A quantized copy of ``model``; the caller's model is left unchanged.

    See :func:`quantize_model_` for the arguments.
    """
    check_module(model, "model")
    handler = _handler(config, calibration, filter_fn)
    work = model if handler.copies else clone(model)
    return handler.apply(work, config, calibration, filter_fn)
