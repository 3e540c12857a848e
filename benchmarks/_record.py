"""What every benchmark record says about its run: when, on which CPU, against what.

A speed-up or an accuracy gain means little without its machine and its
baseline. Each ``benchmarks/results/*.json`` therefore starts with

* ``machine``: the date, the CPU as PyTorch's kernels see it
  (:func:`companion.measure.cpu_info`: kernel level, VNNI, AMX), the thread
  setting of the timings, the versions, and the load average when the run
  started (near 0 on an idle machine);
* ``baselines``: what every compressed model is compared with: for accuracy,
  a model given the same training budget; for speed, the fastest plain
  float32 path (:func:`companion.infer.fastest_fp32`) and, where measured,
  other fp32 engines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from companion import measure


class Record:
    """Start the clock and note the machine; :meth:`write` saves the result beside it."""

    def __init__(self, *, threads: int, baselines: dict[str, str]) -> None:
        self.start = time.perf_counter()
        info = measure.cpu_info()
        info.threads = threads
        self.machine = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu": info.as_row(), "cpu_line": str(info), "timing_threads": threads,
            "platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
        self.baselines = baselines
        print(info)

    def write(self, path: Path, result: dict[str, Any]) -> None:
        seconds = round(time.perf_counter() - self.start, 1)
        self.machine["seconds"] = seconds
        self.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": self.machine, "baselines": self.baselines,
                                    **result}, indent=2, default=str))
        print(f"wrote {path} ({seconds:.0f} s)")
