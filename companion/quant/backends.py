"""``torch.ao`` glue: dynamic int8 and eager static int8 with real int8 kernels."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from .._checks import run_calibration
from .configs import DynamicInt8Config, StaticInt8Config
from .modules import FilterFn, _layers_or_raise
from .observers import make_observer


# --------------------------------------------------------------------------- dynamic / static
@contextlib.contextmanager
def _quiet_torch_ao():
    """Silence torch.ao's deprecation notices (it still runs on torch 2.13) for one call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        yield


def _dynamic(model: nn.Module, config: DynamicInt8Config, calibration: Iterable | None = None,
             filter_fn: FilterFn | None = None) -> nn.Module:
    """A dynamically quantized copy; ``model`` is not touched."""
    from torch.ao.quantization import quantize_dynamic

    kinds = (nn.Linear, nn.LSTM, nn.GRU)
    chosen = _layers_or_raise(model, kinds, filter_fn)
    spec = set(kinds) if filter_fn is None else {name for name, _ in chosen}
    with _quiet_torch_ao():
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)


_FUSIONS = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d),
            (nn.Conv2d, nn.ReLU), (nn.Linear, nn.ReLU), (nn.Conv1d, nn.BatchNorm1d, nn.ReLU),
            (nn.Conv1d, nn.ReLU))


def fusion_groups(model: nn.Sequential) -> list[list[str]]:
    """Consecutive children that eager quantization fuses (Conv-BN-ReLU, Linear-ReLU ...)."""
    children = list(model.named_children())
    groups, i = [], 0
    while i < len(children):
        for pattern in _FUSIONS:
            window = children[i:i + len(pattern)]
            if len(window) == len(pattern) and all(
                    type(m) is t for (_, m), t in zip(window, pattern, strict=True)):
                groups.append([n for n, _ in window])
                i += len(pattern) - 1
                break
        i += 1
    return groups


class _ObserverModule(torch.ao.quantization.ObserverBase):
    """Adapts an :class:`Observer` of this module to ``torch.ao``'s observer interface."""

    def __init__(self, kind: str = "minmax", bits: int = 7) -> None:
        super().__init__(dtype=torch.quint8)
        self.observer = make_observer(kind)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observer.update(x)
        return x

    @torch.jit.export
    def calculate_qparams(self):  # noqa: D102 (torch.ao interface)
        scale, zp = self.observer.qparams(self.bits)
        return scale.reshape(1), zp.reshape(1)


def _static(model: nn.Module, config: StaticInt8Config, calibration: Iterable,
            filter_fn: FilterFn | None = None) -> nn.Module:
    """A statically quantized copy; ``model`` is not touched (a failure leaves it as it was)."""
    import torch.ao.quantization as tq

    if filter_fn is not None:
        raise ValueError("filter_fn: eager static int8 quantizes a whole nn.Sequential between "
                         "one quantize and one dequantize step; for a choice of layers use "
                         "companion.pt2e or DynamicInt8Config")
    if not isinstance(model, nn.Sequential):
        raise TypeError("static int8 (eager mode) needs an nn.Sequential model, "
                        f"got {type(model).__name__}")
    if torch.backends.quantized.engine != config.backend:
        raise ValueError(f"config.backend is {config.backend!r} but PyTorch's quantized engine "
                         f"is {torch.backends.quantized.engine!r}")
    _layers_or_raise(model)
    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    groups = fusion_groups(model)
    if groups:
        with _quiet_torch_ao():
            tq.fuse_modules(model, groups, inplace=True)
    children = list(model.named_children())
    for n, _ in children:
        delattr(model, n)
    model.add_module("quant", tq.QuantStub())
    for n, m in children:
        model.add_module(n, m)
    model.add_module("dequant", tq.DeQuantStub())
    reduce = config.backend in ("x86", "fbgemm")
    activation = _ObserverModule.with_args(kind=config.observer, bits=7 if reduce else 8)
    model.qconfig = tq.QConfig(activation=activation,
                               weight=tq.default_per_channel_weight_observer)
    with _quiet_torch_ao(), torch.no_grad():
        tq.prepare(model, inplace=True)
        run_calibration(model, calibration, config.num_batches)
        tq.convert(model, inplace=True)
    model.train(was_training)
    return model
