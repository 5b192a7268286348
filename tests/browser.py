"""A small headless-Chromium driver over the DevTools protocol (CDP), for tests that check that a page
really renders: load a file, collect console errors, uncaught exceptions and every network request,
evaluate a JavaScript expression, take a screenshot.

    with Browser(find_chromium(), tmp_path) as browser:
        result = browser.load(page_path, "document.images.length")

Chromium itself is installed by the set-up (`make browser`), never by a test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    value: Any  # the evaluated expression's value (JSON)
    screenshot: bytes  # PNG of the whole page
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page requested


class Browser:
    """One headless Chromium in its own process group (so closing it ends its helper processes too)."""

    def __init__(self, binary: str, workdir: Path, timeout: float = 60.0) -> None:
        import websocket

        self.timeout = timeout
        self.profile = Path(workdir) / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.stderr = open(Path(workdir) / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self._id = 0
        try:
            port, path = self._active_port()
            # suppress_origin: Chromium refuses DevTools websockets that send an Origin header it was not
            # told to allow (--remote-allow-origins); a client without one is accepted.
            self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout,
                                                  suppress_origin=True, http_no_proxy=["127.0.0.1"])
        except BaseException:
            self.close()
            raise

    def _active_port(self) -> tuple[str, str]:
        """Chromium writes its DevTools port and browser endpoint path to DevToolsActivePort once it listens."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.profile.parent / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with code {self.proc.returncode} before listening:\n{log}")
            lines = marker.read_text().split("\n") if marker.is_file() else []
            if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                return lines[0].strip(), lines[1].strip()
            time.sleep(0.1)
        raise TimeoutError(f"chromium wrote no {marker} within {self.timeout:.0f} s")

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """One CDP command; events that arrive meanwhile are kept in `self.events`."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for item in self.events:
                if item.get("method") == event:
                    return item
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {event} within {self.timeout:.0f} s")

    def load(self, path: Path, expression: str) -> Rendered:
        """Open `path` in a new tab, wait for its load event, evaluate `expression`, screenshot the page."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        value = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True}, session=session)
        if "exceptionDetails" in value:
            raise RuntimeError(f"evaluating the checks failed: {value['exceptionDetails']}")
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=session)
        return Rendered(value["result"].get("value"), base64.b64decode(shot["data"]), self._errors(),
                        [e["params"]["request"]["url"] for e in self.events
                         if e.get("method") == "Network.requestWillBeSent"])

    def _errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                out.append("uncaught: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
        return out

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            with _suppress_lookup():
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with _suppress_lookup():
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with _suppress_lookup():  # helpers (renderer, zygote) may outlive the main process briefly
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _suppress_lookup() -> Any:
    import contextlib

    return contextlib.suppress(ProcessLookupError, PermissionError)
