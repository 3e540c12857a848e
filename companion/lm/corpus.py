"""The training text: byte tokens of Python standard-library files, and random
windows of them.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .._checks import check_bool, check_float, check_int, check_tensor

# Modules present (as pure Python) in every CPython from 3.9 to 3.13.
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "calendar.py", "configparser.py", "csv.py", "dataclasses.py",
    "difflib.py", "enum.py", "fractions.py", "functools.py", "gettext.py", "heapq.py",
    "inspect.py", "json/decoder.py", "json/encoder.py", "locale.py", "logging/__init__.py",
    "random.py", "shlex.py", "statistics.py", "string.py", "textwrap.py", "tokenize.py",
    "typing.py",
)
# A second domain for fine-tuning: English prose (the help texts of ``pydoc``).
PROSE_FILES: tuple[str, ...] = ("pydoc_data/topics.py",)


@dataclass(frozen=True)
class Corpus:
    """Byte tokens of a text, split per file into train (first 90%) and validation."""

    train: torch.Tensor
    val: torch.Tensor
    files: tuple[str, ...]
    sha256: str

    def __str__(self) -> str:
        return (f"{len(self.files)} files, {len(self.train):,} train + {len(self.val):,} "
                f"validation bytes, sha256 {self.sha256[:12]}")


def stdlib_corpus(files: Iterable[str] = STDLIB_FILES, *, val_fraction: float = 0.1,
                  root: str | Path | None = None) -> Corpus:
    """Read ``files`` (paths relative to the standard library) as byte tokens.

    Args:
        files: relative paths; default :data:`STDLIB_FILES` (code);
            :data:`PROSE_FILES` is English prose.
        val_fraction: the last fraction of every file that validates.
        root: default: this interpreter's standard library.

    Raises:
        ValueError: no files, or a file is missing.
    """
    files = tuple(files)
    if not files or not all(isinstance(f, str) for f in files):
        raise ValueError("files must be a non-empty sequence of relative paths")
    val_fraction = check_float(val_fraction, "val_fraction", min_value=0.0, max_value=0.5,
                               min_inclusive=False)
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    digest = hashlib.sha256()
    train, val = [], []
    for name in files:
        path = base / name
        if not path.is_file():
            raise ValueError(f"files: {name!r} is not in {base}")
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + data)
        cut = int(len(data) * (1 - val_fraction))
        train.append(torch.frombuffer(bytearray(data[:cut]), dtype=torch.uint8))
        val.append(torch.frombuffer(bytearray(data[cut:]), dtype=torch.uint8))
    return Corpus(torch.cat(train).long(), torch.cat(val).long(), files, digest.hexdigest())


class lm_batches:  # noqa: N801  (an iterable used like a function)
    """``steps`` random windows ``(x, y)`` of ``tokens``, ``y`` shifted by one byte.

    Has ``len()``, so :func:`companion.train.fit` shows progress; each pass
    draws fresh windows from a generator seeded with ``seed``. With ``pool``
    the windows come from a fixed set of ``pool`` windows drawn once (a small
    training set, the regime where distillation helps most; their first
    tokens are ``self.starts``), and ``indices=True`` yields ``(x, i)`` with
    ``i`` the positions of the batch's windows in the pool instead of ``y``.
    """

    def __init__(self, tokens: torch.Tensor, *, steps: int, batch_size: int, block_size: int,
                 seed: int = 0, pool: int | None = None, indices: bool = False) -> None:
        self.tokens = check_tensor(tokens, "tokens")
        self.steps = check_int(steps, "steps", min_value=1)
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.block_size = check_int(block_size, "block_size", min_value=1)
        if len(tokens) <= block_size + 1:
            raise ValueError(f"tokens ({len(tokens)}) must be longer than block_size + 1")
        self.generator = torch.Generator().manual_seed(check_int(seed, "seed", min_value=0))
        self.starts = None
        self.indices = check_bool(indices, "indices")
        if indices and pool is None:
            raise ValueError("indices=True needs a pool")
        if pool is not None:
            pool = check_int(pool, "pool", min_value=1)
            self.starts = torch.randint(len(tokens) - block_size - 1, (pool,),
                                        generator=torch.Generator().manual_seed(seed + 10**6))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        offsets = torch.arange(self.block_size + 1)
        for _ in range(self.steps):
            if self.starts is not None:
                pick = torch.randint(len(self.starts), (self.batch_size,), generator=self.generator)
                if self.indices:
                    yield self.tokens[self.starts[pick][:, None] + offsets[:-1]], pick
                    continue
                start = self.starts[pick][:, None]
            else:
                start = torch.randint(len(self.tokens) - self.block_size - 1,
                                      (self.batch_size, 1), generator=self.generator)
            window = self.tokens[start + offsets]
            yield window[:, :-1], window[:, 1:]
