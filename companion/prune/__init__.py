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

The package's files follow the chapter: ``unstructured`` (importance, masks,
sparsity), ``schedules`` (when to prune while training), ``channel_graph``
(Torch-Pruning's dependency graph, for models that are not ``nn.Sequential``),
``structured`` (channels), ``l1`` (L1 penalty -> threshold -> fine-tune) and
``semi_structured`` (2:4). Each imports only the files before it; the public
names (``__all__``) are re-exported here, so ``companion.prune.X`` is the one
address to use. Private helpers stay in their files.
"""

from __future__ import annotations

from .._checks import own_public_names
from .l1 import L1PruneReport, l1_prune_finetune_
from .schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningCallback,
    Schedule,
    iterative_prune_,
)
from .semi_structured import semi_structured_mask, to_semi_structured_
from .structured import prune_channels, select_channels
from .unstructured import (
    channel_l1,
    check_sparsity,
    effective_state_dict,
    is_pruned,
    magnitude,
    mask_from_scores,
    prunable,
    prune,
    prune_,
    remove,
    remove_,
    sparsity,
    taylor,
    threshold_prune_,
)

__all__ = [
    "magnitude", "taylor", "channel_l1",
    "prunable", "check_sparsity", "mask_from_scores", "prune_", "prune", "threshold_prune_",
    "remove_", "remove", "is_pruned", "sparsity", "effective_state_dict",
    "Schedule", "ConstantSparsity", "PolynomialDecay", "PruningCallback", "iterative_prune_",
    "select_channels", "prune_channels",
    "L1PruneReport", "l1_prune_finetune_",
    "semi_structured_mask", "to_semi_structured_",
]

own_public_names(globals(), __name__)
