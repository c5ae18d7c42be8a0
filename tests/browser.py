"""Open a page in headless Chromium over the DevTools protocol (``--remote-debugging-pipe``, no extra
packages): collect every console message, uncaught exception and browser log entry (failed resource
loads included), and take a full-page screenshot."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")


def chromium() -> str | None:
    """The Chromium executable, or None. Debian's ``/usr/bin/chromium`` is a shell launcher that does not
    pass the DevTools pipe (file descriptors 3 and 4) through, so its binary is used directly."""
    for direct in ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser"):
        if os.access(direct, os.X_OK):
            return direct
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    """What the browser saw."""

    console: list[dict[str, Any]] = field(default_factory=list)  # Runtime.consoleAPICalled params
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # Runtime.exceptionThrown params
    log: list[dict[str, Any]] = field(default_factory=list)  # Log.entryAdded entries
    loaded: bool = False
    text: str = ""  # document.body.innerText
    images: list[dict[str, Any]] = field(default_factory=list)  # every <img>: complete, naturalWidth

    def errors(self) -> list[str]:
        """Every console message of level error or warning, uncaught exception and error log entry."""
        out = [f"console.{c['type']}: {c.get('args')}" for c in self.console if c["type"] in ("error", "warning",
                                                                                               "assert")]
        out += [f"exception: {e['exceptionDetails'].get('text')} {e['exceptionDetails'].get('exception', {})}"
                for e in self.exceptions]
        out += [f"log {e['level']} ({e['source']}): {e['text']} {e.get('url', '')}" for e in self.log
                if e["level"] in ("error", "warning")]
        return out


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.w, self.r = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        i = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return True
        while time.monotonic() < deadline:
            try:
                msg = self._read(deadline)
            except TimeoutError:
                return False
            self.events.append(msg)
            if msg.get("method") == method:
                return True
        return False


def open_page(url: str, screenshot: Path, user_data_dir: Path, width: int = 1280,
              timeout: float = 90.0) -> PageResult:
    """Load ``url``, wait for its load event and a quiet moment, and save a full-page PNG screenshot."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds() -> None:  # Chromium reads commands on fd 3 and writes answers on fd 4
        import fcntl

        r, w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(r, 3)
        os.dup2(w, 4)

    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},900",
                             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=child_fds)
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(proc, to_browser_w, from_browser_r)
    result = PageResult()
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        pipe.events.clear()
        pipe.call("Page.navigate", {"url": url}, session=session)
        result.loaded = pipe.wait_for("Page.loadEventFired", timeout)
        pipe.wait_for("never.happens", 1.0)  # let late messages arrive
        ev = pipe.call("Runtime.evaluate", {"expression": "JSON.stringify({text: document.body.innerText, "
                                            "images: Array.from(document.images).map(i => ({complete: i.complete, "
                                            "w: i.naturalWidth, h: i.naturalHeight, alt: i.alt}))})",
                                            "returnByValue": True}, session=session)
        page = json.loads(ev["result"]["value"])
        result.text, result.images = page["text"], page["images"]
        shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=session, timeout=timeout)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        for e in pipe.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled":
                result.console.append({"type": p["type"], "args": [a.get("value", a.get("description"))
                                                                   for a in p.get("args", [])]})
            elif m == "Runtime.exceptionThrown":
                result.exceptions.append(p)
            elif m == "Log.entryAdded":
                result.log.append(p["entry"])
        try:
            pipe.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
    finally:
        os.close(to_browser_w)
        os.close(from_browser_r)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result
