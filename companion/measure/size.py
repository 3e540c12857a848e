"""Serialized size of a model or artifact, and its parameter and non-zero counts."""

from __future__ import annotations

import gzip as _gzip
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_example_input, check_module, evaluating
from .table import Table


# --------------------------------------------------------------------------- size
def bytes_per_value(dtype: torch.dtype) -> float:
    """Storage of one value: 4 for float32, 2 for bf16/fp16, 1 for int8 ..."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if dtype == torch.bool:
        return 1.0
    return torch.empty((), dtype=dtype).element_size()


@dataclass
class SizeReport:
    """Bytes of one serialized artifact, raw and after gzip (level 9)."""

    format: str
    bytes: int
    gzip_bytes: int

    @property
    def kib(self) -> float:
        return self.bytes / 1024

    def __str__(self) -> str:
        return (f"{self.format}: {self.bytes:,} bytes ({self.kib:,.1f} KiB), "
                f"gzip {self.gzip_bytes:,} bytes")


def _serialize(obj: Any, fmt: str, example_input: Any) -> bytes:
    buf = io.BytesIO()
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"obj: no file at {path}")
        return path.read_bytes()
    if isinstance(obj, torch.export.ExportedProgram):
        torch.export.save(obj, buf)
        return buf.getvalue()
    if isinstance(obj, torch.jit.ScriptModule):
        torch.jit.save(obj, buf)
        return buf.getvalue()
    if isinstance(obj, dict):
        torch.save(obj, buf)
        return buf.getvalue()
    check_module(obj, "obj")
    if fmt == "state_dict":
        torch.save(obj.state_dict(), buf)
    elif fmt == "torchscript":
        if example_input is None:
            raise ValueError("example_input is required for fmt='torchscript'")
        with torch.no_grad(), evaluating(obj):
            torch.jit.save(torch.jit.trace(obj, example_input), buf)
    elif fmt == "exported":
        if example_input is None:
            raise ValueError("example_input is required for fmt='exported'")
        args = check_example_input(example_input)
        with evaluating(obj):
            program = torch.export.export(obj, args)
        torch.export.save(program, buf)
    else:
        raise ValueError(f"fmt must be 'state_dict', 'torchscript' or 'exported', got {fmt!r}")
    return buf.getvalue()


def serialized_size(obj: Any, *, fmt: str = "state_dict",
                    example_input: Any = None) -> SizeReport:
    """Serialize ``obj`` in memory and count the bytes.

    Args:
        obj: an ``nn.Module`` (serialized as ``fmt``), a state dict, a
            ``ScriptModule``, an ``ExportedProgram``, raw ``bytes`` (e.g. a
            TFLite flatbuffer) or a path to a file.
        fmt: for modules: ``"state_dict"`` (``torch.save(model.state_dict())``),
            ``"torchscript"`` (traced) or ``"exported"`` (``torch.export``).
        example_input: needed by ``"torchscript"`` and ``"exported"``.
    """
    data = _serialize(obj, fmt, example_input)
    label = fmt if isinstance(obj, nn.Module) else type(obj).__name__
    if isinstance(obj, (str, os.PathLike)):
        label = Path(obj).suffix.lstrip(".") or "file"
    return SizeReport(label, len(data), len(_gzip.compress(data, compresslevel=9, mtime=0)))


def state_dict_bytes(model: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the size of the weights file.

    The library's one count of state-dict bytes (the report, the size
    columns of :func:`compare`, the recommender tables of
    :mod:`companion.apps` use it).

    Args:
        model: an ``nn.Module`` (its state dict is saved), or a state dict
            itself: a mapping of names to tensors, saved as given.

    Raises:
        TypeError: neither a module nor a mapping of tensors.
    """
    if isinstance(model, Mapping):
        bad = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"model: a state dict must map names to tensors; {bad[0]!r} "
                            f"maps to a {type(model[bad[0]]).__name__}")
        return len(_serialize(model if isinstance(model, dict) else dict(model),
                              "state_dict", None))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a state dict (a mapping of names to "
                        f"tensors), got {type(model).__name__}")
    return len(_serialize(model, "state_dict", None))


# --------------------------------------------------------------------------- parameters
@dataclass
class ParamReport:
    """Parameter and non-zero counts, in total and per tensor."""

    total: int
    nonzero: int
    per_tensor: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzero / self.total if self.total else 0.0

    def table(self) -> Table:
        return Table(self.per_tensor, title="parameters")

    def __str__(self) -> str:
        return (f"{self.table()}\ntotal {self.total:,} parameters, {self.nonzero:,} non-zero "
                f"(sparsity {self.sparsity:.2%})")


def _named_weights(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    # Parameters as the model computes with them: a pruned weight (weight_orig
    # plus weight_mask, as torch.nn.utils.prune leaves it) counts as `weight`.
    # A parameter shared by several modules (tied embedding and output layer) counts once.
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("_orig") and hasattr(mod, pname[: -len("_orig")]):
                base = pname[: -len("_orig")]
                yield (f"{mod_name}.{base}" if mod_name else base), getattr(mod, base).detach()
            else:
                yield (f"{mod_name}.{pname}" if mod_name else pname), p.detach()


def count_parameters(model: nn.Module) -> ParamReport:
    """Count parameters and exact non-zeros of ``model`` (masks of pruned layers applied)."""
    check_module(model, "model")
    rows, total, nonzero = [], 0, 0
    for name, w in _named_weights(model):
        n, nz = w.numel(), int(torch.count_nonzero(w))
        rows.append({"tensor": name, "shape": tuple(w.shape), "params": n, "nonzero": nz})
        total, nonzero = total + n, nonzero + nz
    return ParamReport(total, nonzero, rows)
