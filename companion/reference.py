"""The book's reference models: trained once on MNIST by a fixed recipe, then loaded.

Several sections start from the same trained model: section 1.3's
LeNet-300-100 is quantized again in 4.4, pruned in 5.1 and quantized end to
end in 5.2; section 3.1's SmallCNN is compiled in 3.3 and reported on in the
appendix. :func:`reference_model` trains such a model the first time it is
asked for and loads it from ``$COMPANION_CACHE`` after that
(:func:`companion.train.cached_training`), so every page starts from the same
weights and none pays for the training twice.

Every recipe is the same: MNIST, the first 10,000 training images, batches
of 64 on the model's own loader, Adam at 1e-3, seed 0; only the model and the
number of epochs differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data, models, train
from ._checks import check_choice

__all__ = ["REFERENCE_MODELS", "reference_model", "results_dir", "load_record", "load_records"]

# name -> (the model as the cache key spells it, its class, flat inputs, epochs)
_RECIPES = {
    "lenet300100-2ep": ("LeNet300100()", models.LeNet300100, True, 2),
    "lenet300100-3ep": ("LeNet300100()", models.LeNet300100, True, 3),
    "smallcnn-1ep": ("SmallCNN()", models.SmallCNN, False, 1),
    "smallcnn-2ep": ("SmallCNN()", models.SmallCNN, False, 2),
}
#: The names :func:`reference_model` knows.
REFERENCE_MODELS = tuple(_RECIPES)


def reference_model(name: str, *, device: torch.device | str | None = None) -> nn.Module:
    """The reference model ``name``, trained (the first time) or loaded, in eval mode.

    Args:
        name: one of :data:`REFERENCE_MODELS`, e.g. ``"lenet300100-3ep"``
            (LeNet-300-100 after 3 epochs) or ``"smallcnn-1ep"``.
        device: where to train it the first time (default: the CPU); the
            weights are the same file either way.

    Raises:
        ValueError: an unknown ``name``.
    """
    check_choice(name, "name", REFERENCE_MODELS)
    label, build, flatten, epochs = _RECIPES[name]
    key = {"model": label, "data": "MNIST, batch 64, train_size 10_000, seed 0",
           "recipe": f"Adam 1e-3, {epochs} epoch{'s' if epochs > 1 else ''}",
           "threads": torch.get_num_threads()}

    def fit_fn(model: nn.Module) -> None:  # its own loader: shuffling moves on with each epoch
        loader = data.make_loaders(data.load_mnist(), 64, train_size=10_000,
                                   flatten=flatten).train
        train.fit(model.to(device or "cpu"), loader, epochs=epochs, progress=False)

    return train.cached_training(f"mnist-{name}", key, build, fit_fn).cpu()


# --------------------------------------------------------------------------- recorded runs
def results_dir() -> Path:
    """The folder of the book's recorded runs (``benchmarks/results`` of the repository).

    Looked for, in order: ``$COMPANION_RECORDS``; the repository that holds
    the imported ``companion`` package (an editable install in a clone, as
    the README sets up); the current directory and its parents. So a
    notebook copied out of the repository still finds the records.

    Raises:
        FileNotFoundError: none of these holds the folder; the message lists
            where it looked.
    """
    candidates = []
    if os.environ.get("COMPANION_RECORDS"):
        candidates.append(Path(os.environ["COMPANION_RECORDS"]))
    candidates.append(Path(__file__).resolve().parents[1] / "benchmarks" / "results")
    here = Path.cwd().resolve()
    candidates += [d / "benchmarks" / "results" for d in (here, *here.parents)]
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = "\n  ".join(str(c) for c in dict.fromkeys(candidates))
    raise FileNotFoundError("the book's records (benchmarks/results) were not found; looked "
                            f"in:\n  {looked}\nset COMPANION_RECORDS to that folder of a clone "
                            "of the book's repository")


def load_record(name: str) -> dict[str, Any]:
    """The recorded run ``benchmarks/results/<name>.json`` (``make bench`` writes them).

    Raises:
        TypeError: ``name`` is not a string.
        FileNotFoundError: no such record (the message names the folder).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a record's name such as 'llm', got {type(name).__name__}")
    path = results_dir() / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no record {path.name} in {path.parent}")
    return json.loads(path.read_text())


def load_records(folder: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``*.json`` record under ``benchmarks/results/<folder>`` as ``(file name, record)``
    pairs, oldest name first; an empty list when the folder does not exist yet (e.g. ``"gpu"``
    before any GPU machine ran ``make test-gpu``)."""
    if not isinstance(folder, str):
        raise TypeError(f"folder must be a string such as 'gpu', got {type(folder).__name__}")
    sub = results_dir() / folder
    return [(p.name, json.loads(p.read_text())) for p in sorted(sub.glob("*.json"))]
