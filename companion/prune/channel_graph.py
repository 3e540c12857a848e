"""Structured pruning on any graph, with Torch-Pruning as the engine.

:mod:`companion.prune.structured` follows the channels of an ``nn.Sequential``
by hand (the version the book shows whole) and hands every other model to this
file. Real networks join channels in ways a chain cannot see: a residual add
ties the output channels of every block of a stage together, a depthwise
convolution ties its inputs to its outputs, a concatenation shifts indices.
Torch-Pruning (Fang et al., *DepGraph*, CVPR 2023) traces the autograd graph of
one forward pass and groups every slice that must go together; we use its
dependency graph rather than re-deriving it, and keep the book's vocabulary (a
plan is ``{layer: kept indices}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_example_input, evaluating

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _tp():
    try:
        import torch_pruning
    except ImportError as err:  # pragma: no cover - a dependency of companion
        raise ImportError("structured pruning of non-Sequential models needs torch-pruning "
                          "(pip install torch-pruning)") from err
    return torch_pruning


def output_layers(model: nn.Module, example_input: Any) -> list[str]:
    """Conv/Linear layers whose outputs reach the model's output without another such
    layer in between: their channels are the model's outputs and are never pruned."""
    graph = _graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    out: list[str] = []
    for mod, node in graph.module2node.items():
        if isinstance(mod, _LAYERS) and _reaches_output(node, set()):
            out.append(names[mod])
    return out


def _reaches_output(node: Any, seen: set[int]) -> bool:
    if id(node) in seen:
        return False
    seen.add(id(node))
    if not node.outputs:
        return True
    return any(not isinstance(n.module, _LAYERS) and _reaches_output(n, seen)
               for n in node.outputs)


def _graph(model: nn.Module, example_input: Any):
    """The dependency graph of one forward pass (autograd traces it; eval mode, so batch
    norm statistics are not touched)."""
    tp = _tp()
    with torch.enable_grad(), evaluating(model):
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=check_example_input(example_input))


def _handler(tp: Any, module: nn.Module) -> Any:
    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) \
        else tp.prune_conv_out_channels


def _check_plan_layer(model: nn.Module, name: str, keep: Any) -> tuple[nn.Module, list[int]]:
    modules = dict(model.named_modules())
    if name not in modules or not isinstance(modules[name], _LAYERS):
        raise ValueError(f"plan: {name!r} is not a Linear or Conv layer of the model")
    module = modules[name]
    n = module.weight.shape[0]
    keep = torch.as_tensor(keep)
    if keep.numel() == 0:
        raise ValueError(f"plan[{name!r}]: kept indices must be a non-empty subset of "
                         f"0..{n - 1}")
    if keep.dtype.is_floating_point or keep.dtype == torch.bool or keep.dim() != 1:
        raise ValueError(f"plan[{name!r}]: kept indices must be a 1-D sequence of integers")
    kept = keep.tolist()
    if len(set(kept)) != len(kept):
        raise ValueError(f"plan[{name!r}]: kept indices repeat")
    if not kept or min(kept) < 0 or max(kept) >= n:
        raise ValueError(f"plan[{name!r}]: kept indices must be a non-empty subset of "
                         f"0..{n - 1}")
    return module, sorted(set(range(n)) - set(kept))


def groups(model: nn.Module, plan: dict[str, Any], example_input: Any) -> list[Any]:
    """Torch-Pruning groups on ``model`` itself, one per planned layer, checked.

    Raises:
        ValueError: a bad plan entry, two planned layers coupled by the graph
            (prune one of them: the other follows), or a group Torch-Pruning
            refuses (every channel gone, say).
    """
    tp = _tp()
    graph = _graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    out, owner = [], {}
    for name, keep in plan.items():
        module, drop = _check_plan_layer(model, name, keep)
        if not drop:
            continue
        group = graph.get_pruning_group(module, _handler(tp, module), idxs=drop)
        for dep, _ in group:
            target = dep.target.module
            if isinstance(target, _LAYERS) and dep.handler.__name__ == "prune_out_channels":
                other = owner.setdefault(names[target], name)
                if other != name:
                    raise ValueError(f"plan: layers {other!r} and {name!r} share channels "
                                     "(a residual add or a concatenation ties them); plan "
                                     "only one of them, the other follows")
        if not graph.check_pruning_group(group):
            raise ValueError(f"plan[{name!r}]: Torch-Pruning refuses this group "
                             "(a layer would lose every channel)")
        out.append(group)
    return out


def select_by_group_l1(model: nn.Module, ratio: float, example_input: Any,
                       layers: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """``{layer: kept indices}`` by group L1 magnitude (Torch-Pruning's
    ``MagnitudeImportance(p=1)``: a channel's norm summed over every slice it
    couples), ``ratio`` of the channels of each group removed."""
    tp = _tp()
    args = check_example_input(example_input)
    names = {m: n for n, m in model.named_modules()}
    keep_out = set(output_layers(model, example_input))
    chosen = None if layers is None else set(layers)
    ignored = [m for n, m in model.named_modules() if isinstance(m, _LAYERS)
               and (n in keep_out or (chosen is not None and n not in chosen))]
    if ratio == 0:
        return {}
    with torch.enable_grad(), evaluating(model):
        pruner = tp.pruner.MetaPruner(model, args, pruning_ratio=ratio, ignored_layers=ignored,
                                      importance=tp.importance.MagnitudeImportance(p=1))
        chosen_groups = list(pruner.step(interactive=True))  # nothing pruned: we never prune()
    plan: dict[str, torch.Tensor] = {}
    for group in chosen_groups:
        dep, idxs = group[0]
        root = dep.target.module
        n = root.weight.shape[0]
        drop = {int(i) for i in idxs}
        plan[names[root]] = torch.tensor(sorted(set(range(n)) - drop), dtype=torch.long)
    return plan


def _zero(module: nn.Module, handler: str, idxs: list[int]) -> None:
    idx = torch.tensor(idxs, dtype=torch.long, device=module.weight.device)
    weight = getattr(module, "weight_orig", module.weight)
    if handler == "prune_out_channels":
        weight[idx] = 0
        if getattr(module, "bias", None) is not None:
            module.bias[idx] = 0
    elif handler == "prune_in_channels" and isinstance(module, _LAYERS):
        if isinstance(module, nn.Linear) or module.groups == 1:
            weight[:, idx] = 0
        elif module.groups != module.in_channels:
            raise ValueError(f"cannot mask the inputs of grouped convolution {module}")


@torch.no_grad()
def zero_coupled_channels_(model: nn.Module, plan: dict[str, Any],
                           example_input: Any) -> nn.Module:
    """Zero every slice the planned channels couple: producers' outputs, norms, and the
    consumers' input weights (so the masked model equals the pruned one through any
    activation, a Sigmoid included). Layer and group norms, which mix channels, are not
    masked: with them the masked model only approximates the pruned one."""
    for group in groups(model, plan, example_input):
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, (*_LAYERS, nn.modules.batchnorm._BatchNorm)) \
                    and getattr(module, "weight", None) is not None:
                _zero(module, dep.handler.__name__, [int(i) for i in idxs])
    return model


@torch.no_grad()
def remove_coupled_channels_(model: nn.Module, plan: dict[str, Any],
                             example_input: Any) -> nn.Module:
    """Remove the planned channels from ``model`` in place (the graph stays consistent)."""
    for group in groups(model, plan, example_input):
        group.prune()
    return model
