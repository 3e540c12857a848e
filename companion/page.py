"""What a book page needs besides the techniques: glued numbers and x86-only cells.

* :func:`glue` hands a measured number to the prose: the page writes
  ``glue("acc", acc)`` in code and ``{glue:text}`acc:.4f``` in its markdown,
  and Jupyter Book inserts the number this run measured, so prose and output
  cannot disagree (``tools/check_prose.py`` refuses a number typed by hand).
  In a plain script, or in Jupyter without ``myst_nb``, it only returns the value.
* :func:`x86_only` guards a cell whose kernels exist only on x86-64 (fbgemm's
  and x86 Inductor's int8, the CPU int4/int8 weight-only kernels): on another
  CPU it prints why the cell is skipped and returns False, so "Run All" goes on.
"""

from __future__ import annotations

import math
import numbers
import platform
from typing import TypeVar

from ._checks import in_ipython

__all__ = ["glue", "is_x86", "x86_only"]

T = TypeVar("T")

_X86 = {"x86_64", "amd64", "x64", "i386", "i686", "x86"}


def glue(name: str, value: T) -> T:
    """Make ``value`` available to the page's prose as ``{glue:text}`name```; return it.

    Example::

        acc = page.glue("dense_acc", evaluate(model, test))
        # prose: the dense model scores {glue:text}`dense_acc:.4f`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier such as 'dense_acc', got {name!r}")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise TypeError(f"value must be a plain number or a string (use float(x) for a tensor), "
                        f"got {type(value).__name__}")
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        raise ValueError(f"value must be finite to be printed in the prose, got {value!r}")
    if not in_ipython():  # a plain script: no page to glue into (and no shell to create)
        return value
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # a reader's Jupyter without Jupyter Book: nothing to glue into
        return value
    myst_glue(name, value, display=False)
    return value


def is_x86() -> bool:
    """True on an x86 CPU (the only one with fbgemm's and x86 Inductor's int8 kernels)."""
    return platform.machine().lower() in _X86


def x86_only(what: str) -> bool:
    """True on x86; elsewhere print that ``what`` is skipped and why, and return False.

    Example::

        if page.x86_only("static int8 with fbgemm"):
            int8 = quant.quantize_model(model, quant.StaticInt8Config(), calibration=loader)
    """
    if not isinstance(what, str) or not what.strip():
        raise ValueError(f"what must say what the cell runs, got {what!r}")
    if is_x86():
        return True
    print(f"Skipped on {platform.machine() or 'this CPU'}: {what} needs an x86-64 CPU "
          "(its kernels exist only there); the stored outputs show an x86 run.")
    return False
