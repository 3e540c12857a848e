"""Serve MathJax from the built book instead of a CDN.

MathJax 3.2.2 ships in the wheel ``django-static-mathjax``; this extension
copies its ``es5`` folder into ``_mathjax_static/mathjax`` (served as
``_static/mathjax`` in the HTML) before the build and points ``mathjax_path``
at it, so formulas render with no network. It is not put in the source
``_static`` folder because Jupyter Book adds a script tag for every ``.js``
file found there.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx

STATIC_DIR = "_mathjax_static"


def _mathjax_source() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install django-static-mathjax==3.2.2.1 to serve MathJax locally")
    src = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (src / "tex-chtml.js").is_file():
        raise RuntimeError(f"no tex-chtml.js under {src}")
    return src


def _copy(app: Sphinx, config) -> None:
    dest = Path(app.srcdir) / STATIC_DIR / "mathjax"
    if not (dest / "tex-chtml.js").is_file():
        shutil.copytree(_mathjax_source(), dest, dirs_exist_ok=True)
    static = list(config.html_static_path)
    if STATIC_DIR not in static:
        config.html_static_path = [*static, STATIC_DIR]
    config.mathjax_path = "mathjax/tex-chtml.js"


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _copy, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
