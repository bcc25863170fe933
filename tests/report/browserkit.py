"""Open a page in headless Chromium and report what a person would see go wrong.

Why the DevTools protocol and not ``chromium --dump-dom``: a dumped DOM does
not say whether a script threw.  Over ``--remote-debugging-pipe`` Chromium
reports every uncaught exception (``Runtime.exceptionThrown``), every
``console.error`` (``Runtime.consoleAPICalled``), every browser-side error
such as a resource that failed to load (``Log.entryAdded``) and every
request it makes (``Network.requestWillBeSent``: the page must make none
beyond its own file).  The pipe needs only the standard library: JSON
messages separated by NUL bytes, Chromium reading fd 3 and writing fd 4.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
#: URL schemes a self-contained page may load from
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-extension:", "devtools:")


def find_chromium() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@dataclass
class PageCheck:
    """What loading the page showed: errors of any kind, network use, the probe's answer, a screenshot."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dom: Any = None
    screenshot: bytes = b""
    seconds: float = 0.0


class CdpError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium driven over the DevTools pipe; a context manager that always ends it."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1100):
        self.binary = binary
        self.size = (width, height)
        self._next = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="report-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:
            # In the child: our pipes become its fds 3 and 4 (through copies, in
            # case one of them already is 3 or 4); dup2 leaves them inheritable.
            read_end, write_end = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        argv = [self.binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self._profile}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        # close_fds=False: subprocess would close 3 and 4 after wire(); every other
        # descriptor of ours is close-on-exec (Python's default), so none leaks.
        self.proc = subprocess.Popen(argv, preexec_fn=wire, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_child_r)
        os.close(from_child_w)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- the protocol ------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise CdpError(f"Chromium did not answer within {timeout:g} s")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise CdpError("Chromium closed the pipe: " + self._stderr_tail())
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def wait_event(self, method: str, session: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            seen = len(self.events)
            self.events.append(self._read(max(0.01, deadline - time.monotonic())))

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)
            return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:] if self.proc.stderr else ""
        except subprocess.TimeoutExpired:
            return "(still running)"

    # -- what a test needs ---------------------------------------------------------
    def check(self, page: Path, probe: str, settle_js: str = "true", timeout: float = 120) -> PageCheck:
        """Load ``page``, wait until ``settle_js`` is true, evaluate ``probe`` (JSON-able), screenshot it."""
        began = time.monotonic()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session=session)
        mark = len(self.events)
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        self.wait_event("Page.loadEventFired", session, timeout)
        wait = (f"new Promise(ok => {{ const t0 = Date.now(); (function poll() {{ "
                f"if (({settle_js}) || Date.now() - t0 > {int(timeout * 1000)}) ok(true); "
                f"else setTimeout(poll, 100); }})(); }})")
        self.evaluate(session, wait, timeout)
        dom = self.evaluate(session, probe, timeout)
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
        # Whatever arrived meanwhile (a late exception) counts too.
        self.evaluate(session, "true", timeout)
        result = PageCheck(dom=dom, screenshot=base64.b64decode(shot["data"]))
        for ev in self.events[mark:]:
            if ev.get("sessionId") != session:
                continue
            _classify(ev, result)
        result.seconds = time.monotonic() - began
        self.send("Target.closeTarget", {"targetId": target})
        return result

    def evaluate(self, session: str, expression: str, timeout: float) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True}, session=session, timeout=timeout)
        if "exceptionDetails" in reply:
            raise CdpError(f"probe failed: {reply['exceptionDetails']}")
        return reply.get("result", {}).get("value")


def _classify(ev: dict[str, Any], result: PageCheck) -> None:
    method, params = ev.get("method"), ev.get("params", {})
    if method == "Runtime.exceptionThrown":
        d = params.get("exceptionDetails", {})
        text = (d.get("exception") or {}).get("description") or d.get("text", "")
        result.errors.append(f"JavaScript exception: {text} (line {d.get('lineNumber')})")
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        result.errors.append(f"console.{params['type']}: {args}")
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        result.errors.append(f"browser log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
    elif method == "Network.requestWillBeSent":
        url = params.get("request", {}).get("url", "")
        if not url.startswith(LOCAL_SCHEMES):
            result.requests.append(url)
    elif method == "Network.loadingFailed":
        result.errors.append(f"load failed: {params.get('errorText')}")


# -- report.html --------------------------------------------------------------------

#: draws every plot (the page draws them lazily, as they scroll into view), then says when all are drawn;
#: true at once when plotly.js never loaded (nothing will draw: the errors say why)
SETTLE = ("!window.Plotly || !window.renderAllPlots || (renderAllPlots() >= 0 && "
          "document.querySelectorAll('.js-plotly-plot').length >= document.querySelectorAll('div.lazy-plot').length)")
PROBE = """(() => ({
  sections: Array.from(document.querySelectorAll('section.scenario')).map(s => ({
    nodeid: s.dataset.nodeid, code: s.dataset.code, outcome: s.dataset.outcome,
    plotted: !!s.querySelector('.js-plotly-plot .main-svg'), verdict: !!s.querySelector('pre.verdict')})),
  energy: Array.from(document.querySelectorAll('table.energy tr.cell')).map(r => r.dataset.version),
  plots: document.querySelectorAll('.js-plotly-plot').length,
  injected: window.injected === undefined ? null : window.injected,
}))()"""


def report_problems(check: PageCheck, expected: set[str]) -> list[str]:
    """Everything wrong with a loaded report: errors, network use, sections missing or extra or unplotted."""
    problems = list(check.errors)
    problems += [f"network request (the page must be self-contained): {url}" for url in check.requests]
    dom = check.dom or {}
    sections = dom.get("sections", [])
    present = {s["nodeid"] for s in sections}
    problems += [f"missing section: {nodeid}" for nodeid in sorted(expected - present)]
    problems += [f"section for no scenario of the run: {nodeid}" for nodeid in sorted(present - expected)]
    problems += [f"section without a drawn plot: {s['nodeid']}" for s in sections if not s["plotted"]]
    problems += [f"section without a verdict: {s['nodeid']}" for s in sections if not s["verdict"]]
    if dom.get("injected") is not None:
        problems.append("text from the run ran as a script in the page")
    return problems


def check_report(browser: Chromium, page: Path, expected: set[str], screenshot: Path | None = None,
                 timeout: float = 120) -> tuple[list[str], PageCheck]:
    """Load a report, draw all its plots, and list its problems; save the screenshot if asked."""
    check = browser.check(page, PROBE, SETTLE, timeout=timeout)
    if screenshot is not None:
        screenshot.write_bytes(check.screenshot)
    return report_problems(check, expected), check
