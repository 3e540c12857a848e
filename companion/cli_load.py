"""What ``companion report`` loads: the user's model (a state dict and its
architecture, or a ``torch.export`` archive) and the evaluation data (MNIST,
Fashion-MNIST or an ``.npz``), each checked, with errors in one line that says
how to fix them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ._checks import first_line

_STATE_DICT_HELP = ("save a state dict with torch.save(model.state_dict(), path) and pass "
                    "--arch, or a .pt2 archive with torch.export.save")


def _reason(err: BaseException, limit: int = 200) -> str:
    """The first line of an error message; when too long, its first sentence."""
    line = first_line(err, limit=10**9)
    if len(line) > limit and ". " in line[:limit]:     # the first sentence is enough
        return line[: line.index(". ", 0, limit) + 1]
    return first_line(err, limit)


# --------------------------------------------------------------------------- the model
def _import_arch(mod: str, name: str) -> Any:
    """``mod.name``, with the current directory searched first (where ``mymod.py`` lies)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()   # a module written a moment ago must be found
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as err:
        if err.name is not None and (mod == err.name or mod.startswith(err.name + ".")):
            raise ValueError(f"--arch {mod}:{name}: no module named {err.name!r} in the current "
                             f"directory ({cwd}) or on the Python path; run from the folder "
                             f"that holds {mod.split('.')[0]}.py or add it to PYTHONPATH"
                             ) from None
        raise ValueError(f"--arch {mod}:{name}: importing {mod} failed: {_reason(err)}") from None
    except Exception as err:  # noqa: BLE001 - the user's module may raise anything
        raise ValueError(f"--arch {mod}:{name}: importing {mod} failed "
                         f"({type(err).__name__}: {_reason(err)})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    factory = getattr(module, name, None)
    if factory is None:
        found = sorted(k for k, v in vars(module).items() if not k.startswith("_") and
                       (inspect.isclass(v) and issubclass(v, nn.Module) or inspect.isfunction(v))
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"--arch {mod}:{name}: {mod} ({getattr(module, '__file__', '?')}) has no "
                         f"{name!r}; it defines {', '.join(found) or 'no class or function'}")
    return factory


def _companion_arch(arch: str) -> Any:
    from . import models

    factory = getattr(models, arch, None)
    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)):
        known = sorted(k for k, v in vars(models).items() if inspect.isclass(v)
                       and issubclass(v, nn.Module) and v.__module__ == models.__name__)
        raise ValueError(f"--arch {arch!r} is not a class of companion.models "
                         f"({', '.join(known)}); for your own network use module:Class or "
                         f"module:function, with module.py in the current directory")
    return factory


def _build(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    if ":" in arch:
        mod, name = arch.split(":", 1)
        if not mod or not name or ":" in name:
            raise ValueError(f"--arch must be a companion.models class or module:Name, "
                             f"got {arch!r}")
        factory = _import_arch(mod, name)
    else:
        factory = _companion_arch(arch)
    if not callable(factory):
        raise ValueError(f"--arch {arch}: {type(factory).__name__} object is not a class or "
                         f"function that builds the model")
    call = f"{arch}(**{json.dumps(kwargs)})" if kwargs else f"{arch}()"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's constructor may raise anything
        raise ValueError(f"--arch: {call} failed ({type(err).__name__}: {_reason(err)}); pass "
                         f"the constructor's arguments as JSON, e.g. --arch-kwargs "
                         f"'{{\"num_classes\": 10}}'") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--arch: {call} returned a {type(model).__name__}, not a "
                         f"torch.nn.Module")
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise ValueError(f"{path} holds pickled Python objects (a whole model or code), "
                             f"which are refused because loading them could run code; "
                             f"{_STATE_DICT_HELP}") from None
        raise ValueError(f"{path} is not a readable PyTorch file ({_reason(err)}); "
                         f"{_STATE_DICT_HELP}") from None
    except Exception as err:  # noqa: BLE001 - a corrupt file fails in many ways
        raise ValueError(f"{path} is not a readable PyTorch file, truncated or not written by "
                         f"torch.save ({type(err).__name__}: {_reason(err, 120)}); "
                         f"{_STATE_DICT_HELP}") from None
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model_state_dict", "model"):   # a training checkpoint
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor)
                                                          for v in inner.values()):
                return inner
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        what = (f"a dict with keys {', '.join(map(str, list(state)[:5]))}"
                if isinstance(state, dict) else f"a {type(state).__name__}")
        raise ValueError(f"{path} holds {what}, not a state dict of tensors; {_STATE_DICT_HELP}")
    return state


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], path: Path,
                arch: str) -> None:
    """A one-line account of how ``state`` differs from ``model.state_dict()``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("size mismatch for", shapes), ("missing keys", missing),
                         ("unexpected keys", unexpected)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{label} {', '.join(items[:3])}{more}")
    raise ValueError(f"{path} does not fit --arch {arch}: {'; '.join(parts)}; pass the "
                     f"architecture the weights were saved from (and its arguments with "
                     f"--arch-kwargs)")


def load_model(path: str | Path, arch: str | None,
               arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A model from a state dict (+ architecture) or a ``torch.export`` archive.

    Args:
        path: a state dict (``torch.save(model.state_dict(), path)``), loaded
            with ``weights_only=True``, or a ``.pt2`` archive
            (``torch.export.save``).
        arch: for a state dict: a class of ``companion.models`` or
            ``module:Name`` (``Name`` a class or a function returning the
            model; ``module`` is looked for in the current directory first).
        arch_kwargs: keyword arguments of the class or function.

    Returns:
        The model in eval mode (a ``torch.export`` module as it was exported).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: anything else wrong, in one line that says how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model: no file at {path}")
    if arch_kwargs is not None and not isinstance(arch_kwargs, dict):
        raise TypeError(f"arch_kwargs must be a dict, got {type(arch_kwargs).__name__}")
    if path.suffix == ".pt2":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.load(str(path)).module()
        except Exception as err:  # noqa: BLE001 - a corrupt archive fails in many ways
            raise ValueError(f"{path} is not a readable torch.export archive "
                             f"({type(err).__name__}: {_reason(err, 120)}); write one with "
                             f"torch.export.save(torch.export.export(model.eval(), (x,)), "
                             f"path)") from None
    if arch is None:
        raise ValueError("--arch is required with a state dict (e.g. SmallCNN or "
                         "mymodule:MyNet)")
    model = _build(arch, arch_kwargs or {})
    state = _read_state_dict(path)
    _check_fits(model, state, path, arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit --arch {arch}: {_reason(err)}") from None
    return model.eval()


# --------------------------------------------------------------------------- the data
_NPZ_HELP = ("write it with np.savez(path, x=x, y=y, x_calib=x_calib): x (N,C,H,W) float32, "
             "y (N,) int labels, optional x_calib like x")


def _inputs(arr: np.ndarray, name: str, path: Path) -> torch.Tensor:
    """Inputs as a tensor: float32 images or int64 token ids, with layout checks."""
    shape = tuple(arr.shape)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"--data {path}: {name} must be a non-empty batch, shape (N, ...), "
                         f"got shape {shape}")
    channels_last = arr.ndim == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3)
    fix_layout = (f"put the channels first with {name} = {name}.transpose(0, 3, 1, 2)"
                  if channels_last else "")
    if arr.dtype == np.uint8:
        fixes = "; ".join(f for f in (fix_layout, f"scale to float with {name} = "
                                      f"{name}.astype('float32') / 255 (and normalize as in "
                                      f"training)") if f)
        raise ValueError(f"--data {path}: {name} holds uint8 pixels of shape {shape}"
                         f"{' (N,H,W,C, channels last)' if channels_last else ''}; the layout "
                         f"must be N,C,H,W float32: {fixes}")
    if channels_last:
        raise ValueError(f"--data {path}: {name} has shape {shape}, which looks like N,H,W,C "
                         f"(channels last); the layout must be N,C,H,W float32: {fix_layout}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(f"--data {path}: {name} contains {bad:,} NaN or inf values; "
                             f"replace them (np.nan_to_num) or drop those samples")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if arr.dtype.kind in "iu":
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))   # token ids
    raise ValueError(f"--data {path}: {name} has dtype {arr.dtype}; it must be float32 "
                     f"(N,C,H,W images) or integer token ids")


def _labels(arr: np.ndarray, n: int, path: Path) -> torch.Tensor:
    if arr.ndim != 1:
        hint = " (one-hot? use y.argmax(1); a column? use y.ravel())" if arr.ndim == 2 else ""
        raise ValueError(f"--data {path}: y must have shape (N,), one integer label per "
                         f"sample, got shape {tuple(arr.shape)}{hint}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise ValueError(f"--data {path}: y must hold integer class labels, got "
                             f"non-integer values of dtype {arr.dtype}")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"--data {path}: y must hold integer class labels, got dtype "
                         f"{arr.dtype}")
    if len(arr) != n:
        raise ValueError(f"--data {path}: x has {n:,} samples but y has {len(arr):,}; "
                         f"they must be equally long (one label per input)")
    y = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"--data {path}: y holds negative labels (min {int(y.min())}); "
                         f"labels must be class indices 0, 1, 2, ...")
    return y


def load_eval_data(spec: str, test_size: int | None, batch_size: int = 256
                   ) -> tuple[DataLoader, DataLoader | None]:
    """``(eval_loader, calibration_loader)`` for ``mnist``, ``fashion-mnist`` or an ``.npz``.

    The ``.npz`` holds ``x`` (N, C, H, W) float32 inputs (or integer token
    ids), ``y`` (N,) integer labels and optionally ``x_calib`` (calibration
    inputs like ``x``; without them the calibration loader is ``None``).

    Raises:
        ValueError: a missing array, a wrong layout or dtype, NaN/inf, or
            ``x`` and ``y`` of different lengths, in one line that says how to
            fix it.
    """
    from . import data

    if test_size is not None and (isinstance(test_size, bool) or not isinstance(test_size, int)
                                  or test_size < 0):
        raise ValueError(f"--test-size must be a positive number of samples, got {test_size!r}")
    if spec in ("mnist", "fashion-mnist"):
        ds = data.load_mnist() if spec == "mnist" else data.load_fashion_mnist()
        loaders = data.make_loaders(ds, batch_size, test_size=test_size,
                                    eval_batch_size=batch_size)
        calib = data.make_loaders(ds, batch_size, train_size=1024).train
        return loaders.test, calib
    path = Path(spec)
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(f"--data must be mnist, fashion-mnist or an existing .npz file, "
                         f"got {spec!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # noqa: BLE001 - a corrupt archive fails in many ways
        raise ValueError(f"--data {path} is not a readable .npz ({type(err).__name__}: "
                         f"{_reason(err, 120)}); {_NPZ_HELP}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"--data {path} has no array {' or '.join(map(repr, missing))} (it has "
                         f"{', '.join(map(repr, arrays)) or 'none'}); {_NPZ_HELP}")
    x = _inputs(arrays["x"], "x", path)
    y = _labels(arrays["y"], len(x), path)
    xc = _inputs(arrays["x_calib"], "x_calib", path) if "x_calib" in arrays else None
    if xc is not None and (xc.shape[1:] != x.shape[1:] or xc.dtype != x.dtype):
        raise ValueError(f"--data {path}: x_calib must be laid out like x, got shape "
                         f"{tuple(xc.shape)} {xc.dtype} for x {tuple(x.shape)} {x.dtype}")
    if test_size:
        x, y = x[:test_size], y[:test_size]
    eval_loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    calib = (DataLoader(TensorDataset(xc, torch.zeros(len(xc), dtype=torch.long)),
                        batch_size=batch_size) if xc is not None else None)
    return eval_loader, calib
