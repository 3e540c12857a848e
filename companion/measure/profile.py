"""Where a forward pass spends its time, operator by operator."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import check_example_input, check_int, check_module, evaluating, silenced_fd
from .table import Table

# --------------------------------------------------------------------------- profiles


def profile_operators(model: nn.Module, example_input: Any, *, runs: int = 10,
                      warmup: int = 3, threads: int = 1, top: int = 8) -> Table:
    """Where a forward pass spends its time, operator by operator (PyTorch's profiler).

    Use it before optimizing: the slow operator is often not the one with the
    most arithmetic (in a small CNN on a CPU it can be ``max_pool2d`` on a
    channels-first tensor). Times are self times (an operator's own time,
    without the operators it calls), averaged over ``runs`` forward passes in
    eval mode under ``torch.inference_mode``.

    Returns:
        A :class:`Table`: operator, calls per forward, ms per forward, share of the total.
    """
    check_module(model, "model")
    runs = check_int(runs, "runs", min_value=1)
    warmup = check_int(warmup, "warmup", min_value=0)
    threads = check_int(threads, "threads", min_value=1)
    top = check_int(top, "top", min_value=1)
    args = check_example_input(example_input)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with evaluating(model), torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            with silenced_fd(2), torch.autograd.profiler.profile(use_kineto=False) as prof:
                for _ in range(runs):       # (the profiler's C++ side logs to stderr)
                    model(*args)
    finally:
        torch.set_num_threads(old)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"operator": e.key, "calls": e.count // runs,
             "ms per forward": e.self_cpu_time_total / 1000 / runs,
             "share (%)": 100 * e.self_cpu_time_total / total}
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]]
    return Table(rows, title=f"operators by self time, {threads} thread(s), mean of {runs} "
                             f"forward passes ({total / 1000 / runs:.3g} ms each)")
