"""Pruning: importance scores, binary masks, schedules and structured pruning.

Unstructured pruning keeps a binary mask beside each pruned weight, exactly as
``torch.nn.utils.prune`` does (and built on it): the module stores
``weight_orig`` (the trained parameter) and ``weight_mask`` (a buffer of 0/1),
and recomputes ``weight = weight_orig * weight_mask`` before every forward.
Pruned weights therefore stay exactly zero through any number of optimizer
steps; :func:`remove_` makes the zeros permanent. Masked zeros are a
*simulation*: a dense kernel multiplies by them just as fast.

Structured pruning (:func:`prune_channels`) removes whole output channels of a
layer and the matching inputs of the next one, and returns a genuinely
smaller dense model, which runs faster with ordinary kernels.

==============================  ===============================================
``prune_`` / ``prune``          magnitude or Taylor scores, local or global
``PolynomialDecay``             Zhu & Gupta (2017) schedule, TF-MOT style
``ConstantSparsity``            one-shot: one target at one step
``PruningCallback``             ``fit(..., after_step=callback)``
``iterative_prune_``            prune -> fine-tune -> prune more ...
``select_channels``             L1 norm of filters, keep the strongest
``prune_channels``              a smaller dense model
``l1_prune_finetune_``          L1 penalty -> threshold -> fine-tune
``semi_structured_mask``        2:4 pattern; ``to_semi_structured_`` on CUDA
==============================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from ._checks import check_choice, check_float, check_int, check_module, check_tensor
from .regularize import near_zero_fraction, penalized_loss
from .train import clone, evaluate, fit

__all__ = [
    "magnitude", "taylor", "channel_l1", "IMPORTANCE", "get_importance",
    "prunable", "check_sparsity", "mask_from_scores", "prune_", "prune", "threshold_prune_",
    "remove_", "remove", "is_pruned", "sparsity", "effective_state_dict",
    "ConstantSparsity", "PolynomialDecay", "PruningCallback", "iterative_prune_",
    "select_channels", "mask_channels_", "prune_channels",
    "L1PruneReport", "l1_prune_finetune_",
    "semi_structured_mask", "to_semi_structured_",
]

Target = tuple[nn.Module, str]


# --------------------------------------------------------------------------- importance
def magnitude(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """Importance ``|w|`` (Han et al. 2015): small weights matter least."""
    return check_tensor(weight, "weight", floating=True).detach().abs()


def taylor(weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
    """First-order Taylor importance ``|w * dL/dw|`` (Molchanov et al. 2017).

    It estimates how much the loss changes when ``w`` is set to zero; the
    absolute value matters: a large negative product is as important as a
    large positive one.

    Raises:
        ValueError: ``grad`` is missing (run a backward pass first).
    """
    check_tensor(weight, "weight", floating=True)
    if grad is None:
        raise ValueError("grad: taylor importance needs the gradient; run loss.backward() "
                         "first")
    check_tensor(grad, "grad", floating=True)
    if grad.shape != weight.shape:
        raise ValueError(f"grad must have the shape of weight {tuple(weight.shape)}, "
                         f"got {tuple(grad.shape)}")
    return (weight.detach() * grad.detach()).abs()


def channel_l1(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each output channel (row of a Linear, filter of a Conv) (Li et al. 2017)."""
    check_tensor(weight, "weight", floating=True)
    if weight.dim() < 2:
        raise ValueError(f"weight must have an output-channel axis and at least one input axis, "
                         f"got shape {tuple(weight.shape)}")
    return weight.detach().abs().flatten(1).sum(1)


IMPORTANCE: dict[str, Callable[..., torch.Tensor]] = {"magnitude": magnitude, "taylor": taylor}


def get_importance(importance: str | Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A criterion by name (``"magnitude"``, ``"taylor"``) or the callable itself."""
    if callable(importance):
        return importance
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {tuple(IMPORTANCE)} or a callable, "
                         f"got {importance!r}")
    return IMPORTANCE[importance]


# --------------------------------------------------------------------------- masks
def check_sparsity(value: float, name: str = "sparsity") -> float:
    """A sparsity must lie in [0, 1): pruning every weight leaves no model."""
    return check_float(value, name, min_value=0.0, max_value=1.0, max_inclusive=False)


def prunable(model: nn.Module, name: str = "weight") -> list[Target]:
    """``(module, name)`` for every Linear and Conv layer: the usual pruning targets."""
    check_module(model, "model")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                           nn.Conv3d))]
    targets = [(m, name) for m in layers
               if isinstance(getattr(m, name, None), torch.Tensor) or hasattr(m, name + "_orig")]
    if layers and not targets:
        raise ValueError(f"name: no Linear/Conv layer of the model has a parameter named "
                         f"{name!r}")
    return targets


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor the module computes with (``name_orig * name_mask`` when pruned)."""
    if hasattr(module, name + "_orig"):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    param = getattr(module, name, None)
    if not isinstance(param, torch.Tensor):
        raise ValueError(f"params: {type(module).__name__} has no parameter named {name!r}")
    return param


def _grad(module: nn.Module, name: str) -> torch.Tensor | None:
    param = getattr(module, name + "_orig", None)
    if param is None:
        param = getattr(module, name)
    return param.grad


def mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask zeroing exactly ``round(sparsity * n)`` entries with the lowest scores.

    Ties are broken by position, so the count is exact even when many
    scores are equal (already-pruned zeros, say). The mask has the shape,
    and lives on the device, of ``scores``.
    """
    check_tensor(scores, "scores")
    sparsity = check_sparsity(sparsity)
    n_prune = round(sparsity * scores.numel())
    mask = torch.ones(scores.numel(), dtype=scores.dtype, device=scores.device)
    if n_prune:
        order = torch.argsort(scores.flatten(), stable=True)
        mask[order[:n_prune]] = 0
    return mask.view_as(scores)


def _set_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    if hasattr(module, name + "_mask"):  # already pruned: update the buffer in place
        getattr(module, name + "_mask").copy_(mask)
        setattr(module, name, getattr(module, name + "_orig") * mask)
    else:
        tprune.custom_from_mask(module, name, mask)


def _scores(targets: Sequence[Target],
            importance: Callable[..., torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for module, name in targets:
        w = _weight(module, name)
        s = importance(w, _grad(module, name)).float()
        if hasattr(module, name + "_mask"):  # keep what is already pruned pruned
            s = s.masked_fill(getattr(module, name + "_mask") == 0, -1.0)
        out.append(s)
    return out


@torch.no_grad()
def prune_(model: nn.Module, sparsity: float, *, params: Iterable[Target] | None = None,
           importance: str | Callable[..., torch.Tensor] = "magnitude",
           scope: str = "local") -> nn.Module:
    """Mask the least important weights of ``model`` in place.

    Args:
        model: pruned in place (``torch.nn.utils.prune`` reparametrization).
        sparsity: fraction of weights set to zero, in [0, 1). A layer that
            is already pruned is re-masked to this sparsity, keeping its zeros.
        params: ``(module, name)`` pairs; default: every Linear/Conv ``weight``.
        importance: ``"magnitude"``, ``"taylor"`` (needs ``.grad``) or a callable
            ``f(weight, grad) -> scores`` of the weight's shape.
        scope: ``"local"``: each tensor reaches ``sparsity``; ``"global"``: one
            threshold over all of them (layers end with different sparsities).

    Returns:
        ``model``.

    Raises:
        ValueError: sparsity outside [0, 1), unknown importance or scope, a
            module without the named parameter, an empty ``params``.
    """
    check_module(model, "model")
    sparsity = check_sparsity(sparsity)
    check_choice(scope, "scope", ("local", "global"))
    fn = get_importance(importance)
    targets = list(params) if params is not None else prunable(model)
    if not targets:
        raise ValueError("params: nothing to prune")
    scores = _scores(targets, fn)
    if scope == "global":
        flat = mask_from_scores(torch.cat([s.flatten().cpu() for s in scores]), sparsity)
        masks = list(torch.split(flat, [s.numel() for s in scores]))
        masks = [m.view_as(s).to(s.device) for m, s in zip(masks, scores, strict=True)]
    else:
        masks = [mask_from_scores(s, sparsity) for s in scores]
    for (module, name), mask in zip(targets, masks, strict=True):
        _set_mask(module, name, mask.to(_weight(module, name).dtype))
    return model


def prune(model: nn.Module, sparsity: float, **kwargs) -> nn.Module:
    """:func:`prune_` on a copy: the caller's model is left unchanged.

    ``params`` cannot be passed (they would point into the caller's model).
    """
    if "params" in kwargs:
        raise TypeError("params: not supported by the non-mutating prune(); use prune_")
    new = clone(model)
    for p_new, p_old in zip(new.parameters(), model.parameters(), strict=True):
        if p_old.grad is not None:  # deepcopy drops .grad; Taylor scores need it
            p_new.grad = p_old.grad.clone()
    return prune_(new, sparsity, **kwargs)


@torch.no_grad()
def threshold_prune_(model: nn.Module, threshold: float, *,
                     params: Iterable[Target] | None = None) -> nn.Module:
    """Mask every weight with ``|w| < threshold`` in place (magnitude of the *original* weights)."""
    check_module(model, "model")
    threshold = check_float(threshold, "threshold", min_value=0.0)
    for module, name in (list(params) if params is not None else prunable(model)):
        w = _weight(module, name)
        _set_mask(module, name, (w.abs() >= threshold).to(w.dtype))
    return model


def is_pruned(model: nn.Module) -> bool:
    """True when some module of ``model`` carries a pruning mask."""
    return tprune.is_pruned(check_module(model, "model"))


def remove_(model: nn.Module) -> nn.Module:
    """Make every mask permanent in place: ``weight = weight_orig * weight_mask``, hooks removed."""
    check_module(model, "model")
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(module, hook._tensor_name)
    return model


def remove(model: nn.Module) -> nn.Module:
    """:func:`remove_` on a copy."""
    return remove_(clone(model))


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a deployed model would have: masks applied, no ``_orig``/``_mask``."""
    return remove(model).state_dict()


@torch.no_grad()
def sparsity(model: nn.Module, params: Iterable[Target] | None = None) -> float:
    """Fraction of exact zeros among the pruning targets (default: Linear/Conv weights)."""
    targets = list(params) if params is not None else prunable(model)
    total = sum(_weight(m, n).numel() for m, n in targets)
    zeros = sum(int((_weight(m, n) == 0).sum()) for m, n in targets)
    return zeros / total if total else 0.0


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


Schedule = ConstantSparsity | PolynomialDecay


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
        if not isinstance(schedule, (ConstantSparsity, PolynomialDecay)):
            raise TypeError(f"schedule must be ConstantSparsity or PolynomialDecay, "
                            f"got {type(schedule).__name__}")
        get_importance(importance)  # validates now, not at the first pruning step
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


def _check_sequential(model: nn.Module) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential with named layers, "
                        f"got {type(model).__name__}")
    return model


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
    from ._channel_graph import _check_plan_layer

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
        from ._channel_graph import select
        return select(model, ratio, example_input, layers)
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
def mask_channels_(model: nn.Module, plan: dict[str, torch.Tensor], *,
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
        from ._channel_graph import mask_
        return mask_(model, _check_plan(model, plan), example_input)
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
        from ._channel_graph import prune_
        return prune_(new, plan, example_input)
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


# --------------------------------------------------------------------------- L1 -> prune
@dataclass
class L1PruneReport:
    """What each stage of :func:`l1_prune_finetune_` left: exact zeros and accuracy."""

    exact_zeros_after_l1: float
    near_zero_after_l1: float
    sparsity_after_prune: float
    acc_after_l1: float
    acc_after_prune: float
    acc_after_finetune: float


def l1_prune_finetune_(model: nn.Module, train_loader: Iterable, val_loader: Iterable, *,
                       l1: float, sparsity_target: float, epochs: int = 2,
                       finetune_epochs: int = 1, lr: float = 1e-3,
                       near_zero: float = 1e-3, scope: str = "local",
                       progress: bool = False) -> L1PruneReport:
    """Train with an L1 penalty, mask the smallest weights, fine-tune (masks kept), in place.

    L1 alone leaves almost no exact zeros with SGD/Adam (weights hover near
    zero); the threshold makes them zero and fine-tuning recovers accuracy.

    Args:
        model: trained in place; ends pruned (call :func:`remove_` to strip masks).
        l1: penalty coefficient (> 0).
        sparsity_target: fraction of Linear/Conv weights masked after L1 training.
        epochs, finetune_epochs: training with L1, then without.
        near_zero: threshold for counting "near-zero" weights in the report.
        scope: ``"local"`` or ``"global"`` threshold (see :func:`prune_`).
    """
    check_float(l1, "l1", min_value=0.0, min_inclusive=False)
    sparsity_target = check_sparsity(sparsity_target, "sparsity_target")
    fit(model, train_loader, epochs=epochs, lr=lr, progress=progress,
        loss_fn=penalized_loss(model, l1=l1))
    exact, near, acc_l1 = (near_zero_fraction(model, 0.0), near_zero_fraction(model, near_zero),
                           evaluate(model, val_loader))
    prune_(model, sparsity_target, scope=scope)
    acc_pruned = evaluate(model, val_loader)
    fit(model, train_loader, epochs=finetune_epochs, lr=lr, progress=progress)
    return L1PruneReport(exact, near, sparsity(model), acc_l1, acc_pruned,
                         evaluate(model, val_loader))


# --------------------------------------------------------------------------- 2:4
@torch.no_grad()
def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 pattern: in every group of 4 consecutive inputs keep the 2 largest ``|w|``.

    Raises:
        ValueError: ``weight`` is not 2-D or its columns are not a multiple of 4.
    """
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2 or weight.shape[1] % 4:
        raise ValueError(f"weight must be 2-D with a multiple of 4 columns, "
                         f"got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(-1, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, groups.topk(2, dim=1).indices, True)
    return mask.reshape(weight.shape)


@torch.no_grad()
def to_semi_structured_(linear: nn.Linear) -> nn.Linear:
    """Apply the 2:4 mask and store the weight as a semi-structured sparse tensor (CUDA only).

    The layer must be on a CUDA device in float16/bfloat16 (sparse tensor cores,
    Ampere or newer; Mishra et al. 2021).

    Raises:
        TypeError: not an ``nn.Linear``.
        RuntimeError: no CUDA device, or the layer is not on it.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    if not torch.cuda.is_available() or linear.weight.device.type != "cuda":
        raise RuntimeError("linear: 2:4 semi-structured sparsity needs the layer on a CUDA device")
    w = linear.weight * semi_structured_mask(linear.weight)
    linear.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(w), requires_grad=False)
    return linear
