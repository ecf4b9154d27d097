"""Debian's Chromium, headless, driven over its DevTools protocol (a websocket) from the test:
open a page, evaluate JavaScript in it, click, take screenshots, and collect every console
error, uncaught exception and failed load the page produced.

Chromium comes from ``scripts/setup.sh --test`` (Debian package ``chromium``); ``CHROMIUM``
names another binary. A missing browser fails the test that asked for it."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from envoi.testing import wait_for
from websockets.sync.client import ClientConnection, connect

#: As the machine notes ask: no background networking (this machine's network is closed).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1400,1700")


def chromium_binary() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    assert found, "chromium is not installed: run scripts/setup.sh --test (Debian 'chromium')"
    return found


class Page:
    """One browser tab."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.replies: dict[int, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for raw in self.ws:
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self._event(msg["method"], msg.get("params", {}))
                    self.cond.notify_all()
        except Exception:  # the browser went away
            return

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.problems.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.problems.append("exception: " + str(
                d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            self.problems.append(f"log: {e.get('text')} {e.get('url', '')}")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        with self.cond:
            ok = self.cond.wait_for(lambda: msg_id in self.replies, timeout=30)
        assert ok, f"no answer to {method}"
        reply = self.replies.pop(msg_id)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return dict(reply.get("result", {}))

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        wait_for(lambda: self.eval("document.readyState") == "complete", 30,
                 what=f"{url} loaded")

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Chromium:
    """``with Chromium() as browser: page = browser.new_page()``."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="envoi-chromium-")
        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.endpoint = ""
        self.pages: list[Page] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # Chromium says where its DevTools listen
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                self.endpoint = m.group(1)
                break
        assert self.endpoint, "chromium did not start its DevTools endpoint"
        # Keep draining its stderr so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or ()],
                         daemon=True).start()
        # websockets wants its connections entered as context managers: the stack closes them.
        self.stack = contextlib.ExitStack()
        self.browser = self.stack.enter_context(connect(self.endpoint, max_size=64 << 20))

    def new_page(self) -> Page:
        self.browser.send(json.dumps({"id": 1, "method": "Target.createTarget",
                                      "params": {"url": "about:blank"}}))
        reply = json.loads(self.browser.recv(timeout=30))
        target = reply["result"]["targetId"]
        base = self.endpoint.split("/devtools/")[0]
        page = Page(self.stack.enter_context(
            connect(f"{base}/devtools/page/{target}", max_size=64 << 20)))
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        self.pages.append(page)
        return page

    def close(self) -> None:
        self.stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
