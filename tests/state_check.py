"""The tests' one check of in-place behaviour: a module's or tensor's state before and after.

    with assert_unchanged(model, teacher):
        report.optimization_report(model, ...)

or, where the call is made elsewhere (the API sweep)::

    before = snapshot(model)
    ...
    assert not changes(before, model)

The state of a module is its state dict (names, dtypes and values), the class
of every submodule, each submodule's train/eval mode, and each parameter's
``requires_grad`` and whether it holds a gradient; the state of a tensor is
its dtype, shape and values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Snapshot:
    """A copy of what a call may change in a module or tensor."""

    state: dict[str, torch.Tensor]
    kinds: tuple[tuple[str, str], ...] = ()
    modes: tuple[bool, ...] = ()
    requires_grad: tuple[bool, ...] = ()
    has_grad: tuple[bool, ...] = ()


def snapshot(value: nn.Module | torch.Tensor) -> Snapshot:
    """Copy the state of a module or tensor.

    Raises:
        TypeError: ``value`` is neither an ``nn.Module`` nor a tensor.
    """
    if isinstance(value, torch.Tensor):
        return Snapshot({"": value.detach().clone()})
    if not isinstance(value, nn.Module):
        raise TypeError(f"value must be an nn.Module or a tensor, got {type(value).__name__}")
    params = list(value.parameters())
    return Snapshot(
        {k: v.detach().clone() for k, v in value.state_dict().items()},
        tuple((n, type(m).__name__) for n, m in value.named_modules()),
        tuple(m.training for m in value.modules()),
        tuple(p.requires_grad for p in params),
        tuple(p.grad is not None for p in params))


def changes(before: Snapshot, value: nn.Module | torch.Tensor) -> list[str]:
    """What differs between ``before`` and ``value`` now (empty: unchanged)."""
    now = snapshot(value)
    found = []
    if before.state.keys() != now.state.keys():
        found.append(f"state dict keys {sorted(before.state.keys() ^ now.state.keys())}")
    for k in before.state.keys() & now.state.keys():
        a, b = before.state[k], now.state[k]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            found.append(f"{k or 'tensor'} values")
    for what in ("kinds", "modes", "requires_grad", "has_grad"):
        if getattr(before, what) != getattr(now, what):
            found.append({"kinds": "submodule classes", "modes": "train/eval modes",
                          "requires_grad": "requires_grad flags",
                          "has_grad": "gradients"}[what])
    return sorted(found)


@contextmanager
def assert_unchanged(*values: nn.Module | torch.Tensor) -> Iterator[None]:
    """Assert that the block leaves every module and tensor in ``values`` as it found it."""
    before = [snapshot(v) for v in values]
    yield
    for i, (b, v) in enumerate(zip(before, values, strict=True)):
        found = changes(b, v)
        assert not found, f"argument {i} ({type(v).__name__}) changed: {', '.join(found)}"

