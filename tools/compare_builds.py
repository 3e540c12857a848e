"""Check that two `make book` runs give the same results.

Usage:
    python tools/compare_builds.py FIRST_DIR SECOND_DIR

Each directory is a copy of ``_build/jupyter_execute`` (the notebooks as the
book build executed them). For every notebook in both, the outputs of every
code cell *not* tagged ``nbval-ignore-output`` must be identical: those are
the deterministic results (counts, formulas, seeded data). Cells marked
ignore hold timings and training results; their claims are checked by the
asserts that follow them, and since each build ran to the end with
``nb_execution_raise_on_error``, every assert held in both builds. The
script also reports, for information, how many ignored cells printed
different text in the two runs.

Exit status 0 when the deterministic outputs agree, 1 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

# Memory addresses and temporary paths differ between runs by nature.
_VOLATILE = [re.compile(r"0x[0-9a-f]{6,}"), re.compile(r"/tmp/[^\s'\"]+")]


def _text(output: dict) -> str:
    if "text" in output:
        text = output["text"]
    elif "data" in output:
        data = output["data"]
        text = data.get("text/plain", "") if "image/png" not in data else "<image>"
    elif output.get("output_type") == "error":
        text = f"ERROR {output.get('ename')}"
    else:
        text = ""
    text = "".join(text) if isinstance(text, list) else text
    for pattern in _VOLATILE:
        text = pattern.sub("<volatile>", text)
    return text


def _cells(path: Path) -> list[tuple[bool, str]]:
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        ignored = "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
        out.append((ignored, "".join(_text(o) for o in cell.get("outputs", []))))
    return out


def compare(first: Path, second: Path) -> int:
    names = sorted(p.relative_to(first) for p in first.rglob("*.ipynb"))
    if not names:
        print(f"no notebooks under {first}")
        return 1
    bad, differing_ignored, checked = 0, 0, 0
    for name in names:
        other = second / name
        if not other.exists():
            print(f"MISSING in second build: {name}")
            bad += 1
            continue
        a, b = _cells(first / name), _cells(other)
        if len(a) != len(b):
            print(f"DIFFERENT cell count: {name}")
            bad += 1
            continue
        for i, ((ignored, ta), (_, tb)) in enumerate(zip(a, b, strict=True)):
            if ignored:
                differing_ignored += ta != tb
                continue
            checked += 1
            if ta != tb:
                bad += 1
                print(f"DIFFERENT output: {name} code cell {i}\n--- first\n{ta[:500]}\n"
                      f"--- second\n{tb[:500]}")
    print(f"{len(names)} notebooks, {checked} deterministic cells compared, {bad} differences; "
          f"{differing_ignored} timing/training cells printed different text (expected)")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
