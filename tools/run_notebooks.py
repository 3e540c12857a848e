"""Execute the book's notebooks in place, one at a time, and stamp each with its run.

    python tools/run_notebooks.py                   # every notebook under book/
    python tools/run_notebooks.py book/ch5-*/02-*.ipynb

Stored outputs are what a reader sees, so they must come from a real run on
an otherwise idle machine: two notebooks that time or train at once slow each
other down, and earlier pages printed a 2-thread baseline 65x slower than
the 1-thread one because of that. This script

* holds a lock, so a second copy (another terminal, a helper) waits instead of
  running beside it;
* runs the notebooks sequentially, each in its own directory, with nbclient
  recording every cell's start and end time in the cell's metadata;
* writes ``metadata.companion`` into each notebook: the SHA-256 of its code
  cells (``tests/test_notebook_records.py`` checks that the outputs belong to
  the current code), the CPU and thread setup, and the load average before
  and after the run (a load well above 0 means something else was running);
* writes that wall time into the page's "Running this page" note (the first
  cell), so the time a reader is promised is the time of the stored run;
* prints each notebook's wall time, for the README's budget table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TIME = re.compile(r"(took \*\*)[^*]*(\*\* on)")   # in the first cell's "Running this page"
os.environ.setdefault("COMPANION_STRICT_TIMING", "1")   # timing claims fail the run
LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "companion-notebooks.lock"


def code_hash(nb: dict) -> str:
    """SHA-256 of the code cells' sources, in order: what the outputs were made from."""
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def run_time_text(seconds: float) -> str:
    """How the note states a run time: whole seconds under two minutes, else minutes."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def stamp_run_time(nb: dict, seconds: float) -> bool:
    """Put ``seconds`` into the "took **...** on" phrase of the first cell; False if absent."""
    cell = nb["cells"][0]
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    new, n = RUN_TIME.subn(lambda m: m.group(1) + run_time_text(seconds) + m.group(2), src)
    cell["source"] = new
    return n == 1


def all_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def run(path: Path, timeout: int) -> float:
    import nbformat
    from nbclient import NotebookClient

    sys.path.insert(0, str(ROOT))
    from companion import measure

    nb = nbformat.read(path, as_version=4)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - t0
    nb.metadata["companion"] = {
        "code_sha256": code_hash(nb),
        "executed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "cpu": measure.cpu_info().as_row(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    if not stamp_run_time(nb, round(seconds, 1)):
        print(f"  note: {path.name} has no 'Running this page' note with 'took **...** on'",
              flush=True)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or all_notebooks()
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another notebook run holds {LOCK}; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        total = 0.0
        for path in paths:
            load = os.getloadavg()[0]
            print(f"executing {path.relative_to(ROOT)} (load average {load:.2f})", flush=True)
            seconds = run(path, args.timeout)
            total += seconds
            print(f"  {seconds:6.1f} s", flush=True)
        print(f"{len(paths)} notebook(s) in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
