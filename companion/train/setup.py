"""Seeding, device choice, copies, and models trained once and cached."""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_callable, check_int, check_module


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a seeded generator.

    Also asks cuDNN for deterministic kernels, so that the same seed gives
    the same run on the same machine.
    """
    seed = check_int(seed, "seed", min_value=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def default_device(prefer: str = "cuda") -> torch.device:
    """``cuda`` when asked for and available, else ``cpu``."""
    if prefer not in ("cuda", "cpu"):
        raise ValueError(f"prefer must be 'cuda' or 'cpu', got {prefer!r}")
    if prefer == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cached_training(name: str, key: Mapping[str, Any], build: Callable[[], nn.Module],
                    fit_fn: Callable[[nn.Module], Any], *, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """Train a model once and reuse it: later calls with the same ``name`` and ``key``
    load the saved weights instead of training again.

    ``set_seed(seed)``, then ``model = build()`` and ``fit_fn(model)``; the
    state dict is saved (atomically) as ``<cache_dir>/<name>-<hash of key>.pt``
    (default ``cache_dir``: ``$COMPANION_CACHE/models``). The model comes back
    in eval mode either way.

    Args:
        name: a file-name-safe label (letters, digits, ``-``, ``_``).
        key: everything that changes the result (data, recipe, seed, versions),
            as JSON-serialisable values; a change to the *code* of ``fit_fn``
            that is not reflected in ``key`` is not noticed.
        build: makes the untrained model.
        fit_fn: trains it in place (its return value is ignored). Give it its
            own data loader: a ``DataLoader``'s shuffling generator moves on with
            every epoch, so training on a shared one makes the model depend on
            what ran before, and loading from the cache (no epochs run) would
            change what the shared loader yields afterwards.
    """
    import hashlib
    import json
    import re
    from pathlib import Path

    from ..data import default_cache_dir

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"name must be letters, digits, '-' or '_', got {name!r}")
    if not isinstance(key, Mapping):
        raise TypeError(f"key must be a mapping, got {type(key).__name__}")
    check_callable(build, "build")
    check_callable(fit_fn, "fit_fn")
    seed = check_int(seed, "seed", min_value=0)
    blob = json.dumps({"key": dict(key), "seed": seed}, sort_keys=True, default=str)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    path = folder / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"
    set_seed(seed)
    model = check_module(build(), "build()")
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        fit_fn(model)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return model.eval()


def clone(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (used by the non-mutating functions of the library)."""
    return copy.deepcopy(check_module(model, "model"))
