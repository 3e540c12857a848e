"""The few figure helpers the chapters share (matplotlib, labelled axes).

Each function draws on ``ax`` if given, else on a new figure, and returns
the ``Axes`` so a notebook can add to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle

__all__ = ["line_plot", "bar_plot", "histogram", "diagram_lora", "diagram_fsdp", "diagram_gptq",
           "diagram_early_exit", "diagram_moe", "diagram_kv_cache", "diagram_int8_gemm"]


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


# --- Schematics of ideas (boxes and arrows, no data) -------------------------------------

_FILL = {"data": "#dbe9f6", "frozen": "#d9d9d9", "train": "#fde0b6", "active": "#c7e9c0",
         "idle": "#f5f5f5", "op": "#ffffff", "int32": "#fde0b6", "float": "#dbe9f6",
         "int8": "#c7e9c0", "current": "#f4a6a6"}
_RANK_FILL = ["#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fc9272", "#c7c7c7", "#e7ba52",
              "#9edae5"]


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} so the figure stays "
                         f"readable, got {value}")


def _canvas(ax: Axes | None, figsize: tuple[float, float], xlim: tuple[float, float],
            ylim: tuple[float, float]) -> Axes:
    ax = _axes(ax, figsize)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str = "", fill: str = "op",
         *, fontsize: float = 9, gid: str | None = None) -> None:
    """A rounded box with its lower-left corner at (x, y) and ``text`` in its centre."""
    patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                           fc=_FILL.get(fill, fill), ec="#404040", lw=1.1)
    patch.set_gid(gid)
    ax.add_patch(patch)
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "",
           *, dx: float = 0.0, dy: float = 0.15, fontsize: float = 8, style: str = "-|>",
           color: str = "#404040", connection: str = "arc3") -> None:
    """An arrow from ``start`` to ``end``, labelled at its midpoint shifted by (dx, dy)."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, lw=1.1,
                                 color=color, shrinkA=0, shrinkB=0,
                                 connectionstyle=connection))
    if text:
        ax.text((start[0] + end[0]) / 2 + dx, (start[1] + end[1]) / 2 + dy, text,
                ha="center", va="center", fontsize=fontsize, color=color)


def diagram_lora(*, ax: Axes | None = None, figsize: tuple[float, float] = (7, 3.5)) -> Axes:
    """LoRA: the frozen weight ``W`` (d x k) beside a trainable low-rank path ``B A``.

    The input ``x`` (length k) goes through ``W`` and, in parallel, through ``A`` (r x k,
    r small) then ``B`` (d x r); the two are summed, ``h = W x + (alpha / r) B A x``. Matrix
    boxes are drawn roughly to scale, so the path through ``A`` and ``B`` is visibly thin;
    they carry the gid ``frozen`` or ``trainable``.
    """
    ax = _canvas(ax, figsize, (-0.3, 9.3), (-0.9, 4.5))
    _box(ax, 0, 1.0, 0.35, 2.2, "", "data")
    ax.text(0.17, 0.7, "x\n(k)", ha="center", va="top", fontsize=9)
    _box(ax, 1.3, 2.2, 2.2, 2.0, "W  (d × k)\npretrained\nfrozen", "frozen", gid="frozen")
    _box(ax, 1.3, 0.2, 2.2, 0.4, "", "train", gid="trainable")
    ax.text(2.4, -0.1, "A  (r × k), trainable", ha="center", va="top", fontsize=9)
    _box(ax, 4.3, -0.5, 0.4, 2.2, "", "train", gid="trainable")
    ax.text(4.85, 0.6, "B  (d × r)\ntrainable", ha="left", va="center", fontsize=9)
    _arrow(ax, (0.35, 2.6), (1.3, 3.2))
    _arrow(ax, (0.35, 1.6), (1.3, 0.4))
    _arrow(ax, (3.5, 0.4), (4.3, 0.4), "A x\n(r)", dy=0.35)
    ax.add_patch(plt.Circle((6.8, 2.1), 0.3, fc="white", ec="#404040", lw=1.1))
    ax.text(6.8, 2.1, "+", ha="center", va="center", fontsize=13)
    _arrow(ax, (3.5, 3.2), (6.55, 2.25), "W x  (d)", dy=0.35)
    _arrow(ax, (4.7, 1.2), (6.55, 1.95), "(α / r) · B A x", dx=0.5, dy=-0.3)
    _arrow(ax, (7.1, 2.1), (8.0, 2.1))
    _box(ax, 8.0, 1.0, 0.35, 2.2, "", "data")
    ax.text(8.5, 2.1, "h\n(d)", ha="left", va="center", fontsize=9)
    ax.text(4.65, 4.35, "h = W x + (α / r) B A x,   r ≪ min(d, k)", ha="center", va="bottom",
            fontsize=10)
    return ax


def diagram_fsdp(world_size: int = 2, *, ax: Axes | None = None,
                 figsize: tuple[float, float] | None = None) -> Axes:
    """FSDP for one layer: ranks are columns, time runs downwards.

    Each rank stores only its shard ``P_i`` of the parameters. Forward: all-gather the full
    layer, compute, free the other ranks' shards. Backward: all-gather again, compute the
    full gradient, reduce-scatter it so rank ``i`` keeps the summed gradient shard ``G_i``;
    the optimizer then updates ``P_i`` with ``G_i`` only.

    Args:
        world_size: number of ranks (columns), 1 to 8.

    Raises:
        TypeError: if ``world_size`` is not an int.
        ValueError: if ``world_size`` is outside 1..8.
    """
    _check_count("world_size", world_size, 1, 8)
    col, x0, width = 2.4, 3.0, 1.9
    right = x0 + world_size * col
    ax = _canvas(ax, figsize or (2.2 + 1.5 * world_size, 4.6), (0, right), (1.9, 10.0))
    xs = [x0 + i * col + (col - width) / 2 for i in range(world_size)]
    seg = width / world_size

    def params(y: float, label: str, owned_only: bool = False) -> None:
        for i, x in enumerate(xs):
            for j in range(world_size):
                if owned_only and j != i:
                    continue
                ax.add_patch(Rectangle((x + j * seg, y), seg, 0.6, fc=_RANK_FILL[j],
                                       ec="#404040", lw=0.8))
            ax.text(x + (i + 0.5) * seg if owned_only else x + width / 2, y + 0.3,
                    label.format(i=i), ha="center", va="center", fontsize=8)

    def band(top: float, label: str, gather: bool) -> None:
        bottom = top - 1.0
        ax.add_patch(Rectangle((x0, bottom), right - x0, 1.0, fc="#fff3cd", ec="none"))
        ax.text(0.1, top - 0.5, label, ha="left", va="center", fontsize=9,
                fontweight="bold")
        for j in range(world_size):  # segment j travels between rank j and every rank
            for i in range(world_size):
                owner, other = xs[j] + (j + 0.5) * seg, xs[i] + (j + 0.5) * seg
                start, end = ((owner, top), (other, bottom)) if gather else \
                    ((other, top), (owner, bottom))
                _arrow(ax, start, end, color=_RANK_FILL[j] if i != j else "#404040")

    for i, x in enumerate(xs):
        ax.text(x + width / 2, 9.6, f"rank {i}", ha="center", va="center", fontsize=10)
    rows = {8.6: "shard: rank i\nholds P_i", 7.0: "forward: compute,\nthen free",
            5.4: "backward: full\ngradient", 3.8: "keep gradient\nshard G_i",
            2.2: "optimizer step\non the shard"}
    for y, text in rows.items():
        ax.text(0.1, y + 0.3, text, ha="left", va="center", fontsize=9)
    params(8.6, "P_{i}", owned_only=True)
    band(8.6, "all-gather", gather=True)
    params(7.0, "W (full)")
    band(7.0, "all-gather", gather=True)
    params(5.4, "∇W (full)")
    band(5.4, "reduce-scatter\n(sum)", gather=False)
    params(3.8, "G_{i}", owned_only=True)
    for i, x in enumerate(xs):
        _arrow(ax, (x + (i + 0.5) * seg, 3.8), (x + (i + 0.5) * seg, 2.8))
        ax.text(x + width / 2, 2.5, f"P_{i} −= η G_{i}", ha="center", va="center",
                fontsize=8)
    return ax


def diagram_gptq(*, ax: Axes | None = None, figsize: tuple[float, float] = (7, 3.6)) -> Axes:
    """GPTQ's column sweep over one weight matrix (rows = output channels).

    Columns are quantized left to right in blocks. Columns already quantized are frozen;
    the current column ``j`` is rounded, and its error ``e = (w_j - q(w_j)) / [H^-1]_jj``
    is spread onto the columns still to its right, ``W[:, j+1:] -= e [H^-1]_{j, j+1:}``,
    so they can compensate for it. Cells carry the gid ``quantized``, ``current`` or
    ``pending``.
    """
    rows, cols, block, current = 5, 12, 4, 6
    ax = _canvas(ax, figsize, (-2.0, 12.8), (-3.4, 7.0))
    for c in range(cols):
        state = "quantized" if c < current else "current" if c == current else "pending"
        fill = {"quantized": "frozen", "current": "current", "pending": "data"}[state]
        for r in range(rows):
            cell = Rectangle((c, r), 1, 1, fc=_FILL[fill], ec="white", lw=1.5)
            cell.set_gid(state)
            ax.add_patch(cell)
    for b in range(cols // block):
        x = b * block
        ax.plot([x + 0.1, x + block - 0.1], [-0.25] * 2, color="#404040", lw=1.1)
        ax.text(x + block / 2, -0.45, f"block {b + 1}", ha="center", va="top", fontsize=8)
    ax.text(-0.3, rows / 2, "W\n(rows:\noutputs)", ha="right", va="center", fontsize=9)
    ax.text(current / 2, -1.2, "quantized,\nfrozen", ha="center", va="top", fontsize=9)
    ax.text(current + 0.5, -1.2, "current\ncolumn j", ha="center", va="top", fontsize=9)
    ax.text((current + 1 + cols) / 2, -1.2, "not yet quantized:\nreceive the error",
            ha="center", va="top", fontsize=9)
    for target in (current + 1.5, current + 3.5, cols - 0.5):
        _arrow(ax, (current + 0.5, rows + 0.05), (target, rows + 0.05),
               connection="arc3,rad=-0.35", color="#b03030")
    ax.text(current / 2, rows + 1.2, "e = (w_j − q(w_j)) / [H⁻¹]_jj", ha="center",
            va="center", fontsize=9, color="#b03030")
    ax.text((current + 1 + cols) / 2, rows + 1.6, "W[:, j+1:] −= e · [H⁻¹]_(j, j+1:)",
            ha="center", va="center", fontsize=9, color="#b03030")
    _arrow(ax, (0, -2.9), (cols, -2.9), "sweep left → right", dy=-0.3, fontsize=9)
    return ax


def diagram_early_exit(stages: int = 3, *, ax: Axes | None = None,
                       figsize: tuple[float, float] | None = None) -> Axes:
    """An early-exit network: a backbone of stages, each but the last with an exit head.

    After stage ``i`` an exit head predicts; if its confidence passes the test
    ``max softmax >= threshold`` the prediction is returned ("yes"), else the input goes on
    to stage ``i + 1`` ("no"). The last stage's head always answers.

    Args:
        stages: number of backbone stages, 2 to 6.

    Raises:
        TypeError: if ``stages`` is not an int.
        ValueError: if ``stages`` is outside 2..6.
    """
    _check_count("stages", stages, 2, 6)
    step = 3.0
    ax = _canvas(ax, figsize or (1.9 * stages + 1.0, 3.8), (-1.6, step * stages),
                 (-1.5, 4.4))
    _box(ax, -1.5, 3.2, 0.9, 0.8, "input", "data")
    for i in range(stages):
        x = i * step
        _box(ax, x, 3.2, 1.8, 0.8, f"stage {i + 1}", "frozen")
        _arrow(ax, (x - 0.6 if i == 0 else x - step + 1.8, 3.6), (x, 3.6))
        last = i == stages - 1
        _box(ax, x + 0.2, 2.0, 1.4, 0.6, "final head" if last else f"exit head {i + 1}",
             "train")
        _arrow(ax, (x + 0.9, 3.2), (x + 0.9, 2.6))
        if last:
            _arrow(ax, (x + 0.9, 2.0), (x + 0.9, -0.6))
        else:
            ax.add_patch(Polygon([(x + 0.9, 1.6), (x + 2.0, 0.9), (x + 0.9, 0.2),
                                  (x - 0.2, 0.9)], fc="white", ec="#404040", lw=1.1))
            ax.text(x + 0.9, 0.9, "max softmax\n≥ threshold?", ha="center", va="center",
                    fontsize=7.5)
            _arrow(ax, (x + 0.9, 2.0), (x + 0.9, 1.6))
            _arrow(ax, (x + 0.9, 0.2), (x + 0.9, -0.6), "yes", dx=0.3, dy=0, fontsize=9)
            _arrow(ax, (x + 2.0, 0.9), (x + step - 0.6, 3.45), "no", dx=0.6, dy=0,
                   fontsize=9, connection="angle,angleA=0,angleB=90,rad=0")
        _box(ax, x + 0.2, -1.4, 1.4, 0.8, f"output\n(exit {i + 1})", "active")
    return ax


def diagram_moe(num_experts: int = 4, k: int = 1, *, ax: Axes | None = None,
                figsize: tuple[float, float] | None = None) -> Axes:
    """A mixture-of-experts layer for one token: gate, top-k routing, weighted sum.

    The gate scores the token against every expert (a softmax, illustrative numbers); the
    ``k`` best experts run (highlighted, gid ``expert-active``) and their outputs are summed
    weighted by the renormalised gate scores; the other experts stay idle (gid
    ``expert-idle``) for this token.

    Args:
        num_experts: number of experts, 2 to 8.
        k: experts per token, 1 to ``num_experts``.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if ``num_experts`` is outside 2..8 or ``k`` outside 1..num_experts.
    """
    _check_count("num_experts", num_experts, 2, 8)
    _check_count("k", k, 1, num_experts)
    logits = np.cos(np.arange(num_experts) * 2.3) * 1.5
    scores = np.exp(logits) / np.exp(logits).sum()
    chosen = set(np.argsort(-scores, kind="stable")[:k].tolist())
    height = 1.0 * num_experts
    ax = _canvas(ax, figsize or (7, 1.0 + 0.6 * num_experts), (-0.2, 10.4),
                 (-0.3, height + 0.3))
    mid = height / 2
    _box(ax, 0, mid - 0.4, 1.1, 0.8, "token x", "data")
    _box(ax, 1.8, mid - 0.6, 1.5, 1.2, "gate\nsoftmax(x W_g)", "train", fontsize=8)
    _arrow(ax, (1.1, mid), (1.8, mid))
    _box(ax, 8.2, mid - 0.6, 2.0, 1.2, f"Σ over top-{k}\np_i · E_i(x)", "op")
    for e in range(num_experts):
        y = height - 1.0 * (e + 1) + 0.15
        active = e in chosen
        _box(ax, 5.2, y, 1.6, 0.7, f"expert {e + 1}\np = {scores[e]:.2f}",
             "active" if active else "idle", fontsize=8,
             gid="expert-active" if active else "expert-idle")
        _arrow(ax, (3.3, mid), (5.2, y + 0.35), color="#404040" if active else "#b0b0b0")
        if not active:
            ax.text(6.9, y + 0.35, "idle", ha="left", va="center", fontsize=8,
                    color="#808080")
        if active:
            _arrow(ax, (6.8, y + 0.35), (8.2, mid))
    return ax


def diagram_kv_cache(steps: int = 4, *, ax: Axes | None = None,
                     figsize: tuple[float, float] | None = None) -> Axes:
    """The KV cache during decoding: one row per step, the cache growing by one token.

    At step ``t`` the new token's key ``k_t`` and value ``v_t`` are appended (highlighted);
    its query ``q_t`` attends to all ``t`` cached keys, so nothing is recomputed but the
    cache grows linearly with the sequence, by
    ``2 x layers x kv_heads x head_dim x bytes per value`` bytes per token. Cache cells
    carry the gid ``new`` or ``cached``.

    Args:
        steps: number of decoding steps drawn, 1 to 8.

    Raises:
        TypeError: if ``steps`` is not an int.
        ValueError: if ``steps`` is outside 1..8.
    """
    _check_count("steps", steps, 1, 8)
    cell, x0 = 0.7, 2.6
    right = x0 + steps * cell + 2.6
    ax = _canvas(ax, figsize or (max(6.0, 0.75 * right), 1.0 + 0.75 * steps),
                 (0, right), (-1.3, 1.6 * steps + 0.1))
    for t in range(1, steps + 1):
        y = 1.6 * (steps - t)
        ax.text(0.0, y + 0.7, f"step {t}", ha="left", va="center", fontsize=9)
        _box(ax, 1.2, y + 0.45, 0.6, 0.5, f"q_{t}", "train", fontsize=8)
        for s in range(1, t + 1):
            fill = "current" if s == t else "data"
            for row, name in ((0.7, "k"), (0.0, "v")):
                _box(ax, x0 + (s - 1) * cell, y + row, cell - 0.08, 0.6, f"{name}_{s}",
                     fill, fontsize=7.5, gid="new" if s == t else "cached")
        ax.add_patch(Rectangle((x0 - 0.06, y + 0.64), t * cell + 0.04, 0.72, fill=False,
                               ec="#404040", ls="--", lw=0.9))
        _arrow(ax, (1.8, y + 0.7), (x0 - 0.06, y + 1.0))
        ax.text(x0 + t * cell + 0.15, y + 0.65, f"cache: {t} token{'s' if t > 1 else ''}",
                ha="left", va="center", fontsize=8)
    ax.text(0.0, -0.45, "q_t attends to all t cached keys (dashed); k_t, v_t are appended (red)",
            ha="left", va="center", fontsize=8)
    ax.text(0.0, -1.0, "bytes per token = 2 × layers × kv_heads × head_dim × bytes",
            ha="left", va="center", fontsize=8)
    return ax


def diagram_int8_gemm(*, ax: Axes | None = None,
                      figsize: tuple[float, float] = (7.5, 4.2)) -> Axes:
    """The data path of a static int8 linear layer, coloured by dtype.

    A float input is quantized with its scale and zero point ``(s_x, z_x)`` to uint8; an
    int8 x int8 multiply-accumulate runs in int32 against weights quantized per output
    channel (``s_w``); the int32 bias (scale ``s_x s_w``) is added; the accumulator is
    requantized with the multiplier ``M = s_x s_w / s_y`` to a uint8 output, or dequantized
    to float when the next layer wants floats.
    """
    ax = _canvas(ax, figsize, (-0.2, 11.6), (-1.9, 6.3))
    _box(ax, 0, 3.0, 1.3, 0.9, "x\nfloat32", "float")
    _box(ax, 1.8, 3.0, 2.7, 0.9, "quantize\nround(x / s_x) + z_x", fontsize=8)
    _box(ax, 5.0, 3.0, 1.3, 0.9, "x_q\nuint8", "int8")
    _box(ax, 6.8, 3.0, 4.6, 0.9, "int8 × int8 multiply-accumulate\n"
         "acc = Σ (x_q − z_x) · w_q   (int32)", "int32", fontsize=8)
    _box(ax, 7.9, 5.0, 2.4, 0.9, "W_q  int8\nper-channel s_w", "int8", fontsize=8)
    for a, b in (((1.3, 3.45), (1.8, 3.45)), ((4.5, 3.45), (5.0, 3.45)),
                 ((6.3, 3.45), (6.8, 3.45)), ((9.1, 5.0), (9.1, 3.9))):
        _arrow(ax, a, b)
    _box(ax, 7.3, 0.8, 3.6, 0.9, "+ bias (int32)\nb_q = round(b / (s_x s_w))", "int32",
         fontsize=8)
    _box(ax, 1.9, 0.8, 4.6, 0.9, "requantize: round(M · acc) + z_y\nM = s_x s_w / s_y",
         fontsize=8)
    _box(ax, 0, 0.8, 1.3, 0.9, "y_q\nuint8", "int8")
    _arrow(ax, (9.1, 3.0), (9.1, 1.7), "int32", dx=0.35, dy=0)
    _arrow(ax, (7.3, 1.25), (6.5, 1.25))
    _arrow(ax, (1.9, 1.25), (1.3, 1.25))
    _box(ax, 7.1, -1.7, 4.0, 0.9, "or dequantize:\ny = s_x s_w · acc  (float32)", "float",
         fontsize=8)
    _arrow(ax, (9.1, 0.8), (9.1, -0.8))
    handles = [Rectangle((0, 0), 1, 1, fc=_FILL[k], ec="#404040") for k in
               ("float", "int8", "int32")]
    ax.legend(handles, ["float32", "uint8 / int8", "int32"], loc="upper left",
              fontsize=8, frameon=False)
    return ax
