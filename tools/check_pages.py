"""Open every page of the built book in headless Chromium and check it.

Usage: ``python tools/check_pages.py [_build/html]`` (``make check-pages``).

For each HTML page it serves the build on 127.0.0.1, loads the page in
Debian's ``chromium`` with the network log on, saves a screenshot to
``_build/screenshots/``, and fails when the rendered page shows

* a traceback (an exception in a cell),
* an image whose file is missing,
* math that MathJax did not render (a math element without output, or
  ``$$`` left in the text),
* a request to anything but the local server.

Exit status 0 when every page passes, 1 otherwise.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--hide-scrollbars", "--virtual-time-budget=15000",
]
SKIP = ("genindex.html", "search.html", "py-modindex.html")


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)


class _DomScan(HTMLParser):
    """Collects what the checks need from the DOM after JavaScript ran."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str]] = []
        self.imgs: list[str] = []
        self.math_total = 0
        self.math_rendered = 0
        self.tracebacks = 0
        self.text_outside_code: list[str] = []
        self._math_depth: list[int] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag in ("img",) and a.get("src"):
            self.imgs.append(a["src"])
        if "math" in cls.split() and tag in ("span", "div"):
            self.math_total += 1
            self._math_depth.append(len(self.stack))
        if tag == "mjx-container" and self._math_depth:
            self.math_rendered += 1
            self._math_depth.pop()
        if "traceback" in cls.split() or "output_error" in cls:
            self.tracebacks += 1
        if tag not in ("img", "br", "hr", "meta", "link", "input", "source"):
            self.stack.append((tag, cls))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        while self._math_depth and self._math_depth[-1] > len(self.stack):
            self._math_depth.pop()  # a math element closed without MathJax output

    def handle_data(self, data):
        in_code = any(t in ("pre", "code", "script", "style", "textarea") for t, _ in self.stack)
        if not in_code and data.strip():
            self.text_outside_code.append(data)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def _serve(root: Path) -> tuple[socketserver.TCPServer, int]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _page_requests(netlog: Path, origin: str) -> set[str]:
    """URLs the page itself asked for (its origin is the initiator, or the navigation).

    Chromium's own background requests (update checks and the like) have no
    initiator and are not the page's doing, so they are left out.
    """
    if not netlog.is_file():
        return set()
    text = netlog.read_text(errors="replace").rstrip().rstrip(",")
    try:
        log = json.loads(text if text.endswith("}") else text + "]}")
    except json.JSONDecodeError:
        return set(re.findall(r'"initiator":"' + re.escape(origin) + r'"[^}]*?"url":"([^"]+)"',
                              text))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for ev in log.get("events", []):
        params = ev.get("params") or {}
        if ev.get("type") == start and "url" in params:
            if params.get("initiator") == origin or params["url"].startswith(origin):
                urls.add(params["url"])
    return urls


def check_page(chromium: str, root: Path, rel: str, port: int, shots: Path) -> PageReport:
    report = PageReport(rel)
    url = f"http://127.0.0.1:{port}/{rel}"
    with tempfile.TemporaryDirectory() as tmp:
        netlog = Path(tmp) / "net.json"
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
             f"--log-net-log={netlog}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
        shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile2",
             "--window-size=1280,2000", f"--screenshot={shot}", url],
            capture_output=True, timeout=120)
        urls = _page_requests(netlog, f"http://127.0.0.1:{port}")
    for u in sorted(urls):
        p = urlparse(u)
        if p.scheme in ("data", "blob", "about", "chrome", "devtools"):
            continue
        if p.hostname not in ("127.0.0.1", "localhost"):
            report.problems.append(f"request to a non-local URL: {u}")
    scan = _DomScan()
    scan.feed(dom.stdout)
    if not dom.stdout.strip():
        report.problems.append("chromium returned an empty DOM")
    if scan.tracebacks:
        report.problems.append(f"{scan.tracebacks} rendered traceback(s)")
    if scan.math_total and scan.math_rendered < scan.math_total:
        report.problems.append(
            f"{scan.math_total - scan.math_rendered} of {scan.math_total} math elements "
            "not rendered by MathJax")
    if any("$$" in t for t in scan.text_outside_code):
        report.problems.append("'$$' left in the rendered text")
    page_dir = (root / rel).parent
    for src in scan.imgs:
        p = urlparse(src)
        if p.scheme in ("data",):
            continue
        if p.scheme in ("http", "https") and p.hostname not in ("127.0.0.1", "localhost"):
            report.problems.append(f"image from a non-local URL: {src}")
            continue
        path = (root / unquote(p.path).lstrip("/")) if p.scheme else (page_dir / unquote(p.path))
        if not path.resolve().is_file():
            report.problems.append(f"missing image: {src}")
    return report


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "_build/html").resolve()
    if not (root / "index.html").is_file():
        print(f"no built book at {root}: run `make book` first", file=sys.stderr)
        return 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian's chromium is needed: `sudo apt-get install chromium`", file=sys.stderr)
        return 2
    shots = root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                   if not any(part.startswith("_") for part in p.relative_to(root).parts)
                   and p.name not in SKIP)
    server, port = _serve(root)
    failed = 0
    try:
        for rel in pages:
            r = check_page(chromium, root, rel, port, shots)
            status = "ok " if not r.problems else "FAIL"
            print(f"{status} {rel}")
            for prob in r.problems:
                print(f"       - {prob}")
            failed += bool(r.problems)
    finally:
        server.shutdown()
    summary = {"pages": len(pages), "failed": failed, "screenshots": str(shots)}
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
