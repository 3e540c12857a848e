"""The entry points ``quantize_model_`` / ``quantize_model`` and their handler per config type."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .._checks import check_module
from ..train import clone
from .backends import _dynamic, _static
from .configs import DynamicInt8Config, QATConfig, StaticInt8Config, WeightOnlyConfig
from .modules import _become_, _weight_only_, prepare_qat_


# --------------------------------------------------------------------------- entry points
def quantize_model_(model: nn.Module, config: WeightOnlyConfig | DynamicInt8Config |
                    StaticInt8Config | QATConfig) -> nn.Module:
    """Quantize ``model`` in place (torchao's ``quantize_``) and return it.

    Args:
        model: a float model; for :class:`StaticInt8Config` an ``nn.Sequential``.
        config: one of the config dataclasses of this module. A
            :class:`QATConfig` prepares the model for training (see
            :func:`prepare_qat_`).

    The call is atomic: if it fails (a bad calibration loader, a layer it
    cannot quantize), ``model`` is left as it was.

    Raises:
        TypeError: ``model`` is not a module, or an unknown ``config``.
        ValueError: the model has no layer the config can quantize, or the
            calibration data of :class:`StaticInt8Config` yields no batch.
    """
    check_module(model, "model")
    handler, copies = _handler(config)
    return _become_(model, handler(model, config)) if copies else handler(model, config)


def _handler(config: object) -> tuple[Callable[[nn.Module, object], nn.Module], bool]:
    """The function that applies ``config`` and whether it returns a copy (else in place)."""
    handlers = {WeightOnlyConfig: (_weight_only_, False), DynamicInt8Config: (_dynamic, True),
                StaticInt8Config: (_static, True), QATConfig: (prepare_qat_, False)}
    if type(config) not in handlers:
        raise TypeError(f"config must be one of {[c.__name__ for c in handlers]}, "
                        f"got {type(config).__name__}")
    return handlers[type(config)]


def quantize_model(model: nn.Module, config: WeightOnlyConfig | DynamicInt8Config |
                   StaticInt8Config | QATConfig) -> nn.Module:
    """A quantized copy of ``model``; the caller's model is left unchanged.

    See :func:`quantize_model_` for the arguments.
    """
    check_module(model, "model")
    handler, copies = _handler(config)
    return handler(model, config) if copies else handler(clone(model), config)
