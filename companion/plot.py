"""The few figure helpers the chapters share (matplotlib, labelled axes).

Each function draws on ``ax`` if given, else on a new figure, and returns
the ``Axes`` so a notebook can add to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

__all__ = ["line_plot", "bar_plot", "histogram"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def line_plot(x: Sequence[float] | Mapping[str, Sequence[float]],
              series: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
              title: str | None = None, logx: bool = False, logy: bool = False,
              marker: str = "o", ax: Axes | None = None,
              figsize: tuple[float, float] = (6, 3.5)) -> Axes:
    """One line per entry of ``series``; ``x`` is shared, or a mapping with one x per series."""
    if not series:
        raise ValueError("series must not be empty")
    ax = _axes(ax, figsize)
    for name, ys in series.items():
        xs = x[name] if isinstance(x, Mapping) else x
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r} has {len(ys)} values but x has {len(xs)}")
        ax.plot(xs, ys, marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(True, alpha=0.3)
    return ax


def bar_plot(labels: Sequence[str], values: Sequence[float], *, ylabel: str,
             title: str | None = None, annotate: str | None = "{:.3g}", logy: bool = False,
             ax: Axes | None = None, figsize: tuple[float, float] = (6, 3.5)) -> Axes:
    """Bars with their values written on top (``annotate`` is a format string or None)."""
    if len(labels) != len(values):
        raise ValueError(f"labels ({len(labels)}) and values ({len(values)}) differ in length")
    ax = _axes(ax, figsize)
    bars = ax.bar(list(labels), list(values), color="tab:blue")
    if annotate:
        ax.bar_label(bars, labels=[annotate.format(v) for v in values], padding=2)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def histogram(values: np.ndarray | Sequence[float], *, xlabel: str, ylabel: str = "count",
              bins: int = 100, vlines: Mapping[str, float] | None = None, logy: bool = False,
              title: str | None = None, ax: Axes | None = None,
              figsize: tuple[float, float] = (6, 3.5)) -> Axes:
    """A histogram, with optional labelled vertical lines (e.g. clipping ranges)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("values must not be empty")
    ax = _axes(ax, figsize)
    ax.hist(values, bins=bins, color="tab:gray", alpha=0.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, v) in enumerate((vlines or {}).items()):
        ax.axvline(v, color=colors[i % len(colors)], linestyle="--", label=name)
    if vlines:
        ax.legend(fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    return ax
