"""Every number in the book's prose comes from a run, or says why it need not.

A measured number written by hand into a markdown cell goes stale the day
the code, the data or the CPU changes, and nothing notices. The book's rule:
a measured number in prose is inserted from the cell that measured it with
MyST-NB's ``glue`` (``companion.page.glue`` in code, ``{glue:text}`name:.2f```
in prose). This check lists every numeric literal left in the markdown cells
of the book's notebooks and fails unless it is

* inside math (``$...$``, ``$$...$$``), a code span or block, a role such as
  ``{glue:text}`` or ``{cite}``, a link target or a directive option;
* part of a name (``int8``, ``LeNet-300-100``, ``AVX-512``, ``SmolLM2-135M``);
* a section, chapter, figure, table, exercise or article number, a list
  number, or a year;
* in an exercise's statement (its numbers are settings for the reader to
  try; solutions are checked like any prose);
* the "Running this page" stamp, which ``tools/run_notebooks.py`` writes from
  the run's own wall time;
* matched by an entry of ``tools/prose_constants.toml``: a short list of
  constants (bit widths, dtype sizes, ...), each with its reason.

Usage: ``python tools/check_prose.py [NOTEBOOK ...]`` (default: every notebook
under ``book/``). Exit status 1 lists each literal as ``path:cell: literal``
with its context.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from run_notebooks import all_notebooks  # tools/ is on the path when a tool runs

ROOT = Path(__file__).resolve().parent.parent
CONSTANTS = ROOT / "tools" / "prose_constants.toml"

# Regions that are not prose: replaced by spaces so that positions survive.
_NOT_PROSE = [
    re.compile(r"^(```|~~~)(?!\{).*?^\1[^\n]*$", re.S | re.M),  # fenced code (not ```{directive})
    re.compile(r"<!--.*?-->", re.S),  # comments
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"(?<![\\$])\$[^$\n]+?\$"),  # inline math
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # roles: {glue:text}`x:.2f`, {cite}`key`, {numref}`fig`
    re.compile(r"`[^`\n]*`"),  # code spans
    re.compile(r"\]\([^)\s]*\)"),  # link targets
    re.compile(r"^\s*:[\w-]+:.*$", re.M),  # directive options (:class: dropdown, :width: 80%)
    re.compile(r"^\([\w.-]+\)=\s*$", re.M),  # labels
    re.compile(r"^\s*\d+[.)]\s", re.M),  # list numbers
    re.compile(
        r"\b(?:[Ss]ections?|[Cc]hapters?|§|[Ee]xercises?|[Ff]igures?|[Tt]ables?|[Aa]rticles?|"
        r"[Ll]abs?|[Ee]quations?|[Pp]ages?|[Ss]olutions? to exercise)\s+"
        r"\d+(?:\.\d+)*(?:\s*(?:,|and|or|to|–|-)\s*\d+(?:\.\d+)*)*"
    ),  # section, figure, exercise ... numbers
    re.compile(r"took \*\*[\d.]+ (?:s|min)\*\* on a \d+-core CPU"),  # the run stamp
]
_NUMBER = re.compile(r"(?<![\w.\-/^])(?<![A-Za-z]-)\d[\d,]*(?:\.\d+)?")
_YEAR = re.compile(r"(19[5-9]\d|20[0-2]\d)")


@dataclass(frozen=True)
class Literal:
    path: Path
    cell: int
    text: str
    context: str

    def __str__(self) -> str:
        rel = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{rel}:{self.cell}: {self.text}   «{self.context}»"


def load_constants(path: Path = CONSTANTS) -> list[tuple[re.Pattern[str], str]]:
    """The allow-list: ``[[constant]]`` tables with a ``pattern`` and a ``reason``."""
    entries = tomllib.loads(path.read_text())["constant"]
    out = []
    for entry in entries:
        if not entry.get("reason", "").strip():
            raise ValueError(f"{path}: the constant {entry.get('pattern')!r} gives no reason")
        out.append((re.compile(entry["pattern"]), entry["reason"]))
    return out


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _exercise_statements(text: str) -> str:
    """Blank the statements of an Exercises section (up to its first solution)."""
    match = re.search(r"^#+ Exercises\s*$", text, re.M)
    if not match:
        return text
    end = text.find(":::{admonition} Solution", match.end())
    end = len(text) if end < 0 else end
    return text[: match.end()] + re.sub(r"[^\n]", " ", text[match.end() : end]) + text[end:]


def prose_of(markdown: str) -> str:
    """``markdown`` with everything that is not checked prose blanked out."""
    text = _exercise_statements(markdown)
    for pattern in _NOT_PROSE:
        text = _mask(text, pattern)
    return text


def literals_in(markdown: str,
                constants: list[tuple[re.Pattern[str], str]]) -> list[tuple[str, str]]:
    """The unexplained numeric literals of one markdown text, with context."""
    text = prose_of(markdown)
    allowed = [(m.start(), m.end()) for pattern, _ in constants for m in pattern.finditer(text)]
    found = []
    for m in _NUMBER.finditer(text):
        value = m.group(0).rstrip(",")
        if _YEAR.fullmatch(value):
            continue
        if any(a <= m.start() and m.start() + len(value) <= b for a, b in allowed):
            continue
        context = " ".join(markdown[max(0, m.start() - 40) : m.end() + 25].split())
        found.append((value, context))
    return found


_GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`")


def glued_names(cells: list[dict]) -> set[str]:
    """The names ``glue`` stored in the notebook's outputs."""
    return {out.get("metadata", {}).get("scrapbook", {}).get("name")
            for cell in cells if cell["cell_type"] == "code" for out in cell.get("outputs", [])}


def check(paths: list[Path]) -> list[Literal]:
    """Unexplained literals, and glue references with no glued value stored in the page."""
    constants = load_constants()
    out = []
    for path in paths:
        cells = json.loads(path.read_text())["cells"]
        stored = glued_names(cells)
        for i, cell in enumerate(cells):
            if cell["cell_type"] != "markdown":
                continue
            source = "".join(cell["source"])
            for value, context in literals_in(source, constants):
                out.append(Literal(path, i, value, context))
            for ref in _GLUE_REF.finditer(source):
                if ref.group(1).strip() not in stored:
                    out.append(Literal(path, i, ref.group(0), "glued by no cell of this page"))
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or all_notebooks()
    found = check(paths)
    for literal in found:
        print(literal)
    if found:
        print(f"\n{len(found)} numbers in prose neither glued from a run nor explained "
              f"(see {Path(__file__).name}'s docstring and {CONSTANTS.name}).", file=sys.stderr)
        return 1
    print(f"check_prose: {len(paths)} notebooks, every number in prose glued or explained")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
