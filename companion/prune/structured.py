"""Structured (channel) pruning: choose channels by L1 norm, mask them, or remove them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_module
from .channel_graph import (
    _check_plan_layer,
    remove_coupled_channels_,
    select_by_group_l1,
    zero_coupled_channels_,
)
from .unstructured import _weight, channel_l1, check_sparsity, remove

# --------------------------------------------------------------------------- structured
_PASS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
         nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Dropout)
_LAYER = (nn.Linear, nn.Conv2d)


def _chain(model: nn.Sequential, layer: str) -> tuple[list[str], str, bool]:
    """Norm layers between ``layer`` and the next Conv/Linear, that layer, and whether a
    Flatten lies between."""
    names = [n for n, _ in model.named_children()]
    if layer not in names or not isinstance(model[names.index(layer)], _LAYER):
        raise ValueError(f"layers: {layer!r} is not a Linear or Conv2d child of the model")
    norms, flat = [], False
    producer = getattr(model, layer)
    if isinstance(producer, nn.Conv2d) and producer.groups != 1:
        raise ValueError(f"layers: {layer!r} is a grouped convolution; cannot follow it")
    for name in names[names.index(layer) + 1:]:
        m = getattr(model, name)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            norms.append(name)
        elif isinstance(m, nn.Flatten):
            flat = True
        elif isinstance(m, _LAYER):
            ok = (isinstance(m, nn.Linear) and (flat or isinstance(producer, nn.Linear))) or (
                isinstance(m, nn.Conv2d) and isinstance(producer, nn.Conv2d) and not flat
                and m.groups == 1)
            if not ok:
                raise ValueError(f"layers: cannot follow {layer!r} -> {name!r} "
                                 f"({type(producer).__name__} -> {type(m).__name__})")
            return norms, name, flat
        elif not isinstance(m, _PASS):
            raise ValueError(f"layers: cannot follow {layer!r} through {name!r} "
                             f"({type(m).__name__})")
    raise ValueError(f"layers: {layer!r} is the output layer; its outputs cannot be pruned")


def _default_layers(model: nn.Sequential) -> list[str]:
    layers = [n for n, m in model.named_children() if isinstance(m, _LAYER)]
    return layers[:-1]  # never the output layer


def _plan_for_graph(model: nn.Module, example_input: Any) -> bool:
    """True when the graph engine must follow the channels (any model given an input)."""
    if example_input is not None:
        return True
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"example_input is required to prune channels of a "
                        f"{type(model).__name__} (not an nn.Sequential): the channel "
                        "dependencies are traced from one forward pass")
    return False


def _check_plan(model: nn.Module, plan: Any) -> dict[str, torch.Tensor]:
    if not isinstance(plan, dict):
        raise TypeError(f"plan must be a ratio or a dict {{layer: kept indices}}, "
                        f"got {type(plan).__name__}")
    if not plan:
        raise ValueError("plan is empty: name at least one layer")
    for name, keep in plan.items():
        _check_plan_layer(model, name, keep)
    return {name: torch.sort(torch.as_tensor(keep, dtype=torch.long).cpu()).values
            for name, keep in plan.items()}


@torch.no_grad()
def select_channels(model: nn.Module, ratio: float, *, layers: Sequence[str] | None = None,
                    example_input: Any = None) -> dict[str, torch.Tensor]:
    """Output channels to *keep* per layer: the highest L1 norms, ``ratio`` of them removed.

    Args:
        model: left unchanged. An ``nn.Sequential`` (the book's models) is
            followed layer by layer; any other model needs ``example_input``.
        ratio: fraction of channels removed in each layer, in [0, 1); at least one stays.
        layers: names of the Conv/Linear layers to prune; default all but the output ones.
        example_input: one input batch. With it the channels are traced through
            the graph (residual adds, depthwise convs, concatenation) by
            Torch-Pruning, and a channel's L1 norm is summed over every layer
            it couples (Torch-Pruning's ``MagnitudeImportance(p=1)``).

    Returns:
        ``{layer name: sorted indices of the kept channels}``.

    Raises:
        ValueError: ratio outside [0, 1); a layer pair that cannot be followed.
        TypeError: a model that is not an ``nn.Sequential`` without ``example_input``.
    """
    check_module(model, "model")
    ratio = check_sparsity(ratio, "ratio")
    if _plan_for_graph(model, example_input):
        return select_by_group_l1(model, ratio, example_input, layers)
    plan = {}
    for name in (list(layers) if layers is not None else _default_layers(model)):
        _chain(model, name)  # validates
        w = _weight(getattr(model, name), "weight")
        n = w.shape[0]
        keep = max(1, n - round(ratio * n))
        plan[name] = torch.sort(torch.topk(channel_l1(w), keep).indices).values.cpu()
    return plan


def _input_index(keep: torch.Tensor, producer: nn.Module, consumer: nn.Module,
                 flat: bool) -> torch.Tensor:
    if not flat or isinstance(producer, nn.Linear):
        return keep
    per = consumer.in_features // producer.out_channels
    if per * producer.out_channels != consumer.in_features:
        raise ValueError("layers: the flattened size is not a multiple of the channels")
    return (keep[:, None] * per + torch.arange(per)).flatten()


@torch.no_grad()
def _mask_channels_(model: nn.Module, plan: dict[str, torch.Tensor], *,
                   example_input: Any = None) -> nn.Module:
    """Zero the dropped channels in place: a *simulation* of :func:`prune_channels`.

    Zeroes the layer's output slices, the following norm's affine, and the
    next layer's input weights for those channels, so the masked model
    computes what the pruned one does (through any activation, a Sigmoid
    included) at the dense cost.

    Args:
        model: an ``nn.Sequential``, or any model with ``example_input``.
        plan: ``{layer: kept indices}``, as :func:`select_channels` returns.
        example_input: one input batch; needed for models that are not Sequential.
    """
    check_module(model, "model")
    if _plan_for_graph(model, example_input):
        return zero_coupled_channels_(model, _check_plan(model, plan), example_input)
    for name, keep in _check_plan(model, plan).items():
        norms, consumer, flat = _chain(model, name)
        mod = getattr(model, name)
        drop = torch.ones(mod.weight.shape[0], dtype=torch.bool)
        drop[keep] = False
        for m in [mod] + [getattr(model, n) for n in norms]:
            getattr(m, "weight_orig", m.weight)[drop.to(m.weight.device)] = 0
            if m.bias is not None:
                m.bias[drop.to(m.bias.device)] = 0
        nxt = getattr(model, consumer)
        dropped_in = _input_index(torch.nonzero(drop).flatten(), mod, nxt, flat)
        getattr(nxt, "weight_orig", nxt.weight)[:, dropped_in.to(nxt.weight.device)] = 0
    return model


def _slice_layer(m: nn.Module, out_idx: torch.Tensor | None,
                 in_idx: torch.Tensor | None) -> nn.Module:
    w = m.weight.detach()
    b = m.bias.detach() if m.bias is not None else None
    if out_idx is not None:
        w, b = w[out_idx.to(w.device)], (b[out_idx.to(w.device)] if b is not None else None)
    if in_idx is not None:
        w = w[:, in_idx.to(w.device)]
    if isinstance(m, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    else:
        new = nn.Conv2d(w.shape[1], w.shape[0], m.kernel_size, m.stride, m.padding,
                        m.dilation, 1, b is not None, m.padding_mode)
    new = new.to(device=w.device, dtype=w.dtype).train(m.training)
    new.weight.copy_(w)
    if b is not None:
        new.bias.copy_(b)
    return new


def _slice_norm(bn: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = type(bn)(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new = new.to(bn.weight.device if bn.affine else "cpu").train(bn.training)
    i = idx.to(new.weight.device if bn.affine else "cpu")
    if bn.affine:
        new.weight.copy_(bn.weight[i])
        new.bias.copy_(bn.bias[i])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[i])
        new.running_var.copy_(bn.running_var[i])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


@torch.no_grad()
def prune_channels(model: nn.Module, plan: float | dict[str, torch.Tensor], *,
                   layers: Sequence[str] | None = None,
                   example_input: Any = None) -> nn.Module:
    """A smaller dense copy of ``model`` without the dropped channels.

    Removes output channels of each planned layer, the matching channels of
    the norm layers after it, and the matching inputs of the next Conv/Linear
    (through ``Flatten``: all spatial positions of a channel). Unstructured
    masks are made permanent in the copy first. The caller's model is unchanged.

    An ``nn.Sequential`` is followed by hand (the code section 5.1 shows).
    Any other model (a ResNet, a MobileNet, your own class) needs
    ``example_input``: one forward pass is traced by Torch-Pruning, whose
    dependency graph removes every slice a channel couples (both branches of
    a residual add, a depthwise conv's inputs, a concatenation's offsets).

    Args:
        model: the model to prune (left unchanged).
        plan: a ratio in [0, 1) (channels chosen by :func:`select_channels`)
            or ``{layer: kept indices}``.
        layers: with a ratio, the layers to prune (default: all but the output ones).
        example_input: one input batch; required for models that are not Sequential.

    Returns:
        A model of the same class whose pruned layers are genuinely smaller.

    Raises:
        ValueError: a layer pair structured pruning cannot follow, a bad ratio,
            kept indices that repeat, are negative, fractional or out of range,
            an empty plan, or two planned layers the graph couples.
        TypeError: a model that is not Sequential without ``example_input``.
    """
    check_module(model, "model")
    graph = _plan_for_graph(model, example_input)
    if not isinstance(plan, dict):
        plan = select_channels(model, check_sparsity(plan, "plan"), layers=layers,
                               example_input=example_input)
        if not plan:
            return remove(model)
    plan = _check_plan(model, plan)
    new = remove(model)
    if graph:
        return remove_coupled_channels_(new, plan, example_input)
    in_idx: dict[str, torch.Tensor] = {}
    out_idx: dict[str, torch.Tensor] = {}
    for name, keep in plan.items():
        norms, consumer, flat = _chain(new, name)
        out_idx[name] = keep
        for n in norms:
            setattr(new, n, _slice_norm(getattr(new, n), keep))
        in_idx[consumer] = _input_index(keep, getattr(new, name), getattr(new, consumer), flat)
    for name in set(in_idx) | set(out_idx):
        setattr(new, name, _slice_layer(getattr(new, name), out_idx.get(name), in_idx.get(name)))
    return new
