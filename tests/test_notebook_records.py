"""The stored outputs of the book's notebooks come from sequential runs of the current code.

``tools/run_notebooks.py`` (``make notebooks``) executes the notebooks one at a
time and stamps each. These checks read what it left:

* every notebook carries the stamp, and the stamp's hash matches its code
  cells now: no cell was edited after the outputs were made;
* every code cell has an execution count in order and nbclient's start/end
  timestamps;
* no two notebooks' executions overlap in time (notebooks run side by side
  slow each other down, and their timings are then wrong);
* every cell whose output nbval ignores (cell tag ``nbval-ignore-output``: timings,
  training results) and that prints a result (standard output, not only a
  figure or a library's log on stderr) is checked by an ``assert`` in that
  cell or one of the next three code cells; and no compared cell prints a
  timing, an accuracy or a loss, which differ from one CPU to another
  (a cell tagged ``deterministic-output`` says why it may: say, float64
  formulas that every IEEE machine computes alike).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from itertools import combinations
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tools" / "run_notebooks.py"
pytestmark = pytest.mark.skipif(not RUNNER.is_file(), reason="needs the repository's tools/")
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts) if (ROOT / "book").is_dir() else []

# Words that mark a measured quantity in a printed line. A compared (not ignored)
# cell must not print them: they come from training or timing and differ per CPU.
MEASURED = re.compile(r"(\d\s*(ms|µs|s/it|it/s)\b|accuracy|test acc|\bloss\b|images/s|"
                      r"median|latency|speed-up|x faster)", re.IGNORECASE)


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _text(cell: dict) -> str:
    """What the cell printed as a result: stdout and plain-text results, no figures or logs."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("name") == "stderr":
            continue
        t = o.get("text") or o.get("data", {}).get("text/plain", "")
        t = "".join(t) if isinstance(t, list) else t
        if not re.fullmatch(r"<(Figure|IPython\.core\.display\.Image)[^>]*>", t.strip()):
            out.append(t)
    return "".join(out)


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _interval(nb: dict) -> tuple[dt.datetime, dt.datetime]:
    times = [c["metadata"]["execution"] for c in _code_cells(nb)]
    return (min(_when(t["iopub.execute_input"]) for t in times),
            max(_when(t["shell.execute_reply"]) for t in times))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "book")))
def test_outputs_come_from_a_stamped_run_of_the_current_code(path):
    nb = _load(path)
    stamp = nb["metadata"].get("companion")
    assert stamp, f"{path.name}: no run stamp; execute it with `make notebooks NB={path}`"
    assert stamp["code_sha256"] == _runner().code_hash(nb), (
        f"{path.name}: code changed after its outputs were made; re-run it with "
        f"`make notebooks NB={path}`")
    cells = _code_cells(nb)
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name}: cells were not executed once each, top to bottom")
    for c in cells:
        assert {"iopub.execute_input", "shell.execute_reply"} <= set(c["metadata"]["execution"])


def test_no_two_notebooks_ran_at_the_same_time():
    spans = {p.name: _interval(_load(p)) for p in NOTEBOOKS if _load(p)["metadata"].get(
        "companion")}
    overlaps = [(a, b) for (a, (a0, a1)), (b, (b0, b1)) in combinations(spans.items(), 2)
                if a0 < b1 and b0 < a1]
    assert not overlaps, f"notebooks executed at the same time: {overlaps}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "book")))
def test_measured_outputs_are_ignored_by_nbval_and_asserted(path):
    cells, problems = _code_cells(_load(path)), []
    for i, cell in enumerate(cells):
        src, text = _src(cell), _text(cell)
        tags = cell["metadata"].get("tags", [])
        if "NBVAL_" in src:
            problems.append(f"code cell {i}: an nbval comment marker shows on the page; use "
                            f"the cell tag (nbval-ignore-output, nbval-skip) instead")
        if "nbval-ignore-output" in tags:
            window = "\n".join(_src(c) for c in cells[i:i + 4])
            if text.strip() and not re.search(r"\bassert\b|assert_timing\(", window):
                problems.append(f"code cell {i}: an ignored output that no assert checks")
        elif ("nbval-skip" not in tags and "deterministic-output" not in tags
              and (hit := MEASURED.search(text))):
            problems.append(f"code cell {i} is compared by nbval but prints a measured "
                            f"quantity ({hit.group(0)!r}): tag it nbval-ignore-output "
                            f"and assert the claim")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)
