"""Small, honest stand-ins for the applications the source articles name.

None of these is a real product; each keeps the *measurement* that matters
for its application, on data that ships offline:

* **recommendation**: an embedding-table model (matrix factorization) on
  generated user-item interactions; :func:`quantized_recommender` stores the
  tables as int8 with one scale per row (:func:`companion.quant.quantize`,
  symmetric, ``axis=0``), and :func:`recall_at_k` measures ranking quality
  before and after;
* **latency-bounded perception**: :func:`frame_latencies` times a model one
  frame at a time and :class:`BudgetReport` says how many frames met a
  per-frame budget;
* **medical-style imaging**: :func:`per_class_accuracy` and
  :func:`expected_calibration_error` report what compression costs per class
  and in calibration, not only in average accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_float, check_int, check_tensor
from ._timing import time_calls
from .quant.affine import dequantize, quantize
from .train import fit

__all__ = [
    "Interactions",
    "make_interactions",
    "MatrixFactorization",
    "fit_recommender_",
    "recall_at_k",
    "quantized_recommender",
    "frame_latencies",
    "BudgetReport",
    "budget_report",
    "per_class_accuracy",
    "expected_calibration_error",
]


# --------------------------------------------------------------------------- recommendation
@dataclass(frozen=True)
class Interactions:
    """Generated implicit feedback: training pairs and held-out positives per user."""

    num_users: int
    num_items: int
    train_pairs: torch.Tensor          # (N, 2) long: user, item
    test_items: torch.Tensor           # (num_users, k_test) long: held-out positives


def make_interactions(num_users: int = 2000, num_items: int = 1000, *, rank: int = 8,
                      per_user: int = 20, test_per_user: int = 5, seed: int = 0) -> Interactions:
    """Users and items with hidden ``rank``-dimensional tastes; each user interacts
    with ``per_user`` items drawn in proportion to ``exp(affinity)``; the last
    ``test_per_user`` of them are held out for evaluation.
    """
    num_users = check_int(num_users, "num_users", min_value=1)
    num_items = check_int(num_items, "num_items", min_value=2)
    rank = check_int(rank, "rank", min_value=1)
    per_user = check_int(per_user, "per_user", min_value=2, max_value=num_items)
    test_per_user = check_int(test_per_user, "test_per_user", min_value=1,
                              max_value=per_user - 1)
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(num_users, rank, generator=gen)
    items = torch.randn(num_items, rank, generator=gen)
    logits = users @ items.T * (2.0 / rank ** 0.5)
    chosen = torch.multinomial(logits.softmax(-1), per_user, replacement=False, generator=gen)
    train_items = chosen[:, : per_user - test_per_user]
    user_ids = torch.arange(num_users).repeat_interleave(train_items.shape[1])
    pairs = torch.stack([user_ids, train_items.reshape(-1)], dim=1)
    return Interactions(num_users, num_items, pairs, chosen[:, per_user - test_per_user:])


class MatrixFactorization(nn.Module):
    """Score ``(u, i) = <user_emb[u], item_emb[i]> + item_bias[i]``."""

    def __init__(self, num_users: int, num_items: int, dim: int = 32) -> None:
        super().__init__()
        dim = check_int(dim, "dim", min_value=1)
        self.user = nn.Embedding(check_int(num_users, "num_users", min_value=1), dim)
        self.item = nn.Embedding(check_int(num_items, "num_items", min_value=1), dim)
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1) + self.item_bias[items]

    def all_scores(self) -> torch.Tensor:
        """``(num_users, num_items)`` scores of every pair."""
        return self.user.weight @ self.item.weight.T + self.item_bias


class _ShuffledPairs:
    """Batches of (user, item) training pairs in a fresh order each epoch."""

    def __init__(self, pairs: torch.Tensor, batch_size: int, gen: torch.Generator) -> None:
        self.pairs, self.batch_size, self.gen = pairs, batch_size, gen

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.pairs), generator=self.gen)
        for start in range(0, len(self.pairs), self.batch_size):
            yield tuple(self.pairs[order[start:start + self.batch_size]].T)


def fit_recommender_(model: MatrixFactorization, data: Interactions, *, epochs: int = 10,
                    batch_size: int = 1024, lr: float = 0.02, weight_decay: float = 1e-5,
                    seed: int = 0) -> list[float]:
    """Train in place with the BPR loss (a positive item should outscore a random one),
    through :func:`companion.train.fit`; returns the mean loss per epoch."""
    if not isinstance(model, MatrixFactorization):
        raise TypeError(f"model must be a MatrixFactorization, got {type(model).__name__}")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    gen = torch.Generator().manual_seed(seed)

    def bpr_loss(m: nn.Module, batch: tuple) -> torch.Tensor:
        users, positives = batch
        negatives = torch.randint(0, data.num_items, (len(users),), generator=gen)
        return -nn.functional.logsigmoid(m(users, positives) - m(users, negatives)).mean()

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    return fit(model, _ShuffledPairs(data.train_pairs, batch_size, gen), epochs=epochs,
               optimizer=opt, batch_loss=bpr_loss, progress=False,
               desc="train recommender").train_loss


def recall_at_k(scores: torch.Tensor, data: Interactions, k: int = 10) -> float:
    """Fraction of held-out positives ranked in each user's top ``k`` (training items excluded)."""
    scores = check_tensor(scores, "scores", floating=True).clone()
    k = check_int(k, "k", min_value=1)
    if scores.shape != (data.num_users, data.num_items):
        raise ValueError(f"scores must have shape {(data.num_users, data.num_items)}, "
                         f"got {tuple(scores.shape)}")
    scores[data.train_pairs[:, 0], data.train_pairs[:, 1]] = float("-inf")
    top = scores.topk(k, dim=1).indices
    hits = (top[:, :, None] == data.test_items[:, None, :]).any(1).float()
    return float(hits.mean())


def quantized_recommender(
        model: MatrixFactorization) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Int8 row-wise tables of ``model`` (not modified) and the scores they give.

    Each embedding row gets one scale: ``companion.quant.quantize(table, 8,
    symmetric=True, axis=0)`` (int8 codes, error at most ``scale / 2``).

    Returns:
        ``(stored, scores)``: the dict that would be stored (codes, scales,
        float bias) and the ``(users, items)`` scores computed from it.
    """
    if not isinstance(model, MatrixFactorization):
        raise TypeError(f"model must be a MatrixFactorization, got {type(model).__name__}")
    users = quantize(model.user.weight.detach(), 8, symmetric=True, axis=0)
    items = quantize(model.item.weight.detach(), 8, symmetric=True, axis=0)
    stored = {"user_codes": users.codes, "user_scales": users.scale,
              "item_codes": items.codes, "item_scales": items.scale,
              "item_bias": model.item_bias.detach().clone()}
    with torch.no_grad():
        scores = dequantize(users) @ dequantize(items).T + stored["item_bias"]
    return stored, scores


# --------------------------------------------------------------------------- perception
def frame_latencies(run: Callable[[Any], Any] | Mapping[str, Callable[[Any], Any]],
                    frames: Any, *, warmup: int = 5, block: int = 25,
                    threads: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Milliseconds of ``run(frame)`` for each frame, one at a time, after ``warmup`` calls.

    ``run`` may also be a mapping of names to callables: the variants then
    take turns over blocks of ``block`` frames (frames 0 to 24 through one
    variant, then through the next, ..., then frames 25 to 49, the order of
    the variants rotating each round), so that a slow phase of the machine
    slows them alike, while each variant still runs frame after frame with
    its weights in cache, as it would on its own. A dict of arrays is
    returned, in the mapping's order. This is the library's one timing loop
    (:func:`companion.measure.compare_latency` uses it with blocks of 1);
    ``threads=None`` keeps PyTorch's current thread count.
    """
    runs = dict(run) if isinstance(run, Mapping) else {"": run}
    if not runs:
        raise ValueError("run must not be an empty mapping")
    for name, fn in runs.items():
        if not callable(fn):
            raise TypeError(f"run must be callable (or a mapping of callables); "
                            f"{name or 'run'!r} is {type(fn).__name__}")
    warmup = check_int(warmup, "warmup", min_value=0)
    block = check_int(block, "block", min_value=1)
    if threads is not None:
        threads = check_int(threads, "threads", min_value=1)
    if len(frames) == 0:
        raise ValueError("frames must not be empty")
    times, _ = time_calls({name: (lambda i, fn=fn: fn(frames[i % len(frames)]))
                           for name, fn in runs.items()},
                          repeats=len(frames), warmup=warmup, block=block, threads=threads)
    out = {name: np.array(t) for name, t in times.items()}
    return out if isinstance(run, Mapping) else out[""]


@dataclass
class BudgetReport:
    """How a model's per-frame latencies compare with a budget."""

    name: str
    budget_ms: float
    median_ms: float
    p99_ms: float
    met: float           # fraction of frames within the budget

    def as_row(self) -> dict[str, Any]:
        return {"model": self.name, "budget ms": self.budget_ms, "median ms": self.median_ms,
                "p99 ms": self.p99_ms, "frames within budget": self.met}


def budget_report(name: str, latencies_ms: np.ndarray, budget_ms: float) -> BudgetReport:
    """Summarize :func:`frame_latencies` against ``budget_ms``."""
    lat = np.asarray(latencies_ms, dtype=float)
    if lat.size == 0:
        raise ValueError("latencies_ms must not be empty")
    check_float(budget_ms, "budget_ms", min_value=0.0, min_inclusive=False)
    return BudgetReport(name, float(budget_ms), float(np.median(lat)),
                        float(np.percentile(lat, 99)), float((lat <= budget_ms).mean()))


# --------------------------------------------------------------------------- imaging
def _logits_labels(logits: torch.Tensor | np.ndarray,
                   labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as tensors, checked: finite ``(N, classes)`` logits and ``(N,)`` labels, N > 0."""
    out = []
    for value, name in ((logits, "logits"), (labels, "labels")):
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{name} must be a torch.Tensor or np.ndarray, "
                            f"got {type(value).__name__}")
        out.append(check_tensor(torch.as_tensor(value), name))
    lg, y = out
    if lg.dim() != 2 or y.dim() != 1 or len(lg) != len(y):
        raise ValueError(f"logits must be (N, classes) and labels (N,), got "
                         f"{tuple(lg.shape)} and {tuple(y.shape)}")
    return lg, y


def per_class_accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                       num_classes: int | None = None) -> np.ndarray:
    """Accuracy of each class (NaN for a class absent from ``labels``)."""
    lg, y = _logits_labels(logits, labels)
    n = lg.shape[1] if num_classes is None else check_int(num_classes, "num_classes", min_value=1)
    correct = (lg.argmax(1) == y).float()
    out = np.full(n, np.nan)
    for c in range(n):
        sel = y == c
        if sel.any():
            out[c] = float(correct[sel].mean())
    return out


def expected_calibration_error(logits: torch.Tensor | np.ndarray,
                               labels: torch.Tensor | np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over confidence bins.

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` with ``bins`` equal-width bins
    of the top softmax probability (Guo et al. 2017).
    """
    lg, y = _logits_labels(logits, labels)
    bins = check_int(bins, "bins", min_value=1)
    conf, pred = lg.float().softmax(1).max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += float(sel.float().mean() * (correct[sel].mean() - conf[sel].mean()).abs())
    return ece
