"""Unstructured pruning: importance scores, binary masks (``torch.nn.utils.prune``), sparsity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .._checks import check_callable, check_choice, check_float, check_module, check_tensor
from ..train import clone

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


_IMPORTANCE: dict[str, Callable[..., torch.Tensor]] = {"magnitude": magnitude, "taylor": taylor}


def _get_importance(importance: str | Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A criterion by name (``"magnitude"``, ``"taylor"``) or the callable itself."""
    if callable(importance):
        return importance
    if importance not in _IMPORTANCE:
        raise ValueError(f"importance must be one of {tuple(_IMPORTANCE)} or a callable, "
                         f"got {importance!r}")
    return _IMPORTANCE[importance]


# --------------------------------------------------------------------------- masks
def check_sparsity(value: float, name: str = "sparsity") -> float:
    """A sparsity must lie in [0, 1): pruning every weight leaves no model."""
    return check_float(value, name, min_value=0.0, max_value=1.0, max_inclusive=False)


def prunable(model: nn.Module, name: str = "weight", *,
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> list[Target]:
    """``(module, name)`` for every Linear and Conv layer that ``filter_fn(module, fqn)``
    selects (default: all): the usual pruning targets."""
    check_module(model, "model")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    check_callable(filter_fn, "filter_fn", optional=True)
    layers = [m for fqn, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
              and (filter_fn is None or filter_fn(m, fqn))]
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
def prune_(model: nn.Module, sparsity: float, *,
           filter_fn: Callable[[nn.Module, str], bool] | None = None,
           importance: str | Callable[..., torch.Tensor] = "magnitude",
           scope: str = "local") -> nn.Module:
    """Mask the least important weights of ``model`` in place.

    Args:
        model: pruned in place (``torch.nn.utils.prune`` reparametrization).
        sparsity: fraction of weights set to zero, in [0, 1). A layer that
            is already pruned is re-masked to this sparsity, keeping its zeros.
        filter_fn: ``filter_fn(module, fqn) -> bool`` chooses the Linear/Conv
            layers whose ``weight`` is pruned (as in torchao); default: all.
        importance: ``"magnitude"``, ``"taylor"`` (needs ``.grad``) or a callable
            ``f(weight, grad) -> scores`` of the weight's shape.
        scope: ``"local"``: each tensor reaches ``sparsity``; ``"global"``: one
            threshold over all of them (layers end with different sparsities).

    Returns:
        ``model``.

    Raises:
        ValueError: sparsity outside [0, 1), unknown importance or scope, a
            ``filter_fn`` that selects no layer.
    """
    check_module(model, "model")
    sparsity = check_sparsity(sparsity)
    check_choice(scope, "scope", ("local", "global"))
    fn = _get_importance(importance)
    targets = prunable(model, filter_fn=filter_fn)
    if not targets:
        raise ValueError("filter_fn: nothing to prune (no Linear/Conv layer selected)")
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


def prune(model: nn.Module, sparsity: float, *,
          filter_fn: Callable[[nn.Module, str], bool] | None = None,
          importance: str | Callable[..., torch.Tensor] = "magnitude",
          scope: str = "local") -> nn.Module:
    """:func:`prune_` on a copy: the caller's model is left unchanged.

    The copy keeps the gradients of ``model`` (``"taylor"`` scores need them).

    Args:
        model: not modified.
        sparsity, filter_fn, importance, scope: as in :func:`prune_`.

    Returns:
        The pruned copy (``torch.nn.utils.prune`` masks on its layers).

    Raises:
        ValueError: as :func:`prune_`.
    """
    new = clone(model)
    for p_new, p_old in zip(new.parameters(), model.parameters(), strict=True):
        if p_old.grad is not None:  # deepcopy drops .grad; Taylor scores need it
            p_new.grad = p_old.grad.clone()
    return prune_(new, sparsity, filter_fn=filter_fn, importance=importance, scope=scope)


@torch.no_grad()
def threshold_prune_(model: nn.Module, threshold: float, *,
                     filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Mask every weight with ``|w| < threshold`` in place (magnitude of the *original*
    weights), in the Linear/Conv layers ``filter_fn(module, fqn)`` selects (default: all)."""
    check_module(model, "model")
    threshold = check_float(threshold, "threshold", min_value=0.0)
    for module, name in prunable(model, filter_fn=filter_fn):
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
def sparsity(model: nn.Module, *,
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> float:
    """Fraction of exact zeros in the Linear/Conv weights ``filter_fn(module, fqn)``
    selects (default: all)."""
    targets = prunable(model, filter_fn=filter_fn)
    total = sum(_weight(m, n).numel() for m, n in targets)
    zeros = sum(int((_weight(m, n) == 0).sum()) for m, n in targets)
    return zeros / total if total else 0.0
