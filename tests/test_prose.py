"""tools/check_prose.py: every number in the book's prose is glued from a run or explained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "tools" / "check_prose.py").exists():  # the installed-wheel run copies tests/ only
    pytest.skip("no tools/check_prose.py next to the tests", allow_module_level=True)
sys.path.insert(0, str(ROOT / "tools"))
import check_prose  # noqa: E402  (tools/ is not a package)
from run_notebooks import all_notebooks  # noqa: E402

NOTEBOOKS = all_notebooks()
CONSTANTS = check_prose.load_constants()


def literals(markdown: str) -> list[str]:
    return [value for value, _ in check_prose.literals_in(markdown, CONSTANTS)]


@pytest.mark.skipif(not NOTEBOOKS, reason="no book/ next to the tests (installed-package run)")
def test_every_number_in_the_prose_is_glued_or_explained():
    found = check_prose.check(NOTEBOOKS)
    assert not found, "numbers typed into the prose:\n" + "\n".join(map(str, found))


@pytest.mark.skipif(not NOTEBOOKS, reason="no book/ next to the tests (installed-package run)")
def test_a_number_injected_into_a_page_fails_the_check(tmp_path):
    page = NOTEBOOKS[0]
    nb = json.loads(page.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    injected = "\n\nThe model reaches 97.31% accuracy, 3.2x faster.\n"
    first["source"] = ["".join(first["source"]) + injected]
    bad = tmp_path / page.name
    bad.write_text(json.dumps(nb))
    before = [lit.text for lit in check_prose.check([page])]
    after = [lit.text for lit in check_prose.check([bad])]
    assert sorted(after) == sorted(before + ["97.31", "3.2"])
    assert check_prose.main([str(bad)]) == 1


@pytest.mark.parametrize("prose", [
    "The dense model scores {glue:text}`dense_acc:.4f` on the test set.",   # glued
    "The step is $\\Delta = 2/255$, so $q \\in [0, 255]$.",                  # math
    "Call `prune.prune(model, 0.95)`.",                                        # code span
    "As section 5.2 and exercise 3 show, Han et al. (2015) prune LeNet-300-100.",
    "We store int8 codes at 4 bits each, a 2:4 pattern, in 784 → 300 → 100 → 10.",
    ":::{admonition} Running this page\nThe run that stored this page's outputs took "
    "**18 s** on a 2-core CPU without a GPU.\n:::",
    "## Exercises\n\n1. (Easy) Replace 0.8 by 0.95.\n",                        # statements
])
def test_what_the_check_accepts(prose):
    assert literals(prose) == []


@pytest.mark.parametrize(("prose", "expected"), [
    ("int8 is 3.9x smaller", ["3.9"]),
    ("it keeps 95.3% of the accuracy", ["95.3"]),
    ("one step takes 12 ms", ["12"]),
    ("## Exercises\n\n1. Try 0.8.\n\n:::{admonition} Solution to exercise 1\n"
     ":class: dropdown\nIt gets 0.93.\n:::", ["0.93"]),  # solutions are prose
    ("the file is 105,968 bytes", ["105,968"]),
])
def test_what_the_check_refuses(prose, expected):
    assert literals(prose) == expected


def test_every_constant_gives_a_reason(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[[constant]]\npattern = "x"\nreason = " "\n')
    with pytest.raises(ValueError, match="reason"):
        check_prose.load_constants(bad)


def test_a_glue_reference_needs_a_glued_value(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "source": [], "outputs": [{
            "output_type": "display_data", "data": {"text/plain": "0.93"},
            "metadata": {"scrapbook": {"name": "acc", "mime_prefix": ""}}}]},
        {"cell_type": "markdown", "source": ["It scores {glue:text}`acc:.2f`, "
                                             "{glue:text}`speedup:.1f` times faster."]},
    ]}
    page = tmp_path / "page.ipynb"
    page.write_text(json.dumps(nb))
    assert [lit.text for lit in check_prose.check([page])] == ["{glue:text}`speedup:.1f`"]
