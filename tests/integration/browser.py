"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol: load a page,
collect console errors and exceptions, evaluate an expression, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest


def chromium_or_skip() -> str:
    """The chromium binary; skip without it (in CI, ``CI=true``, fail: .ci/run installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


@dataclass
class PageRun:
    """What a page did while loading: errors seen, the evaluated value, the screenshot bytes."""

    errors: list[str] = field(default_factory=list)
    value: Any = None
    screenshot: bytes = b""


class _Cdp:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id, self.events = ws, 0, []  # type: ignore[var-annotated]

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my = self.next_id
        await self.ws.send_json({"id": my, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    async def wait_event(self, method: str, timeout: float = 30) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        while True:
            msg = await self.ws.receive_json(timeout=timeout)
            self.events.append(msg)
            if msg.get("method") == method:
                return


async def _run(binary: str, url: str, expression: str, width: int) -> PageRun:
    profile = tempfile.mkdtemp(prefix="causelog-chromium-")
    proc = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        endpoint = None
        for _ in range(200):
            line = proc.stderr.readline()
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                endpoint = found.group(1)
                break
        assert endpoint, "chromium did not start its DevTools endpoint"
        port = re.search(r":(\d+)/", endpoint).group(1)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                page = next(t for t in await resp.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _Cdp(ws)
                for domain in ("Page", "Runtime", "Log"):
                    await cdp.call(f"{domain}.enable")
                await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                               mobile=False)
                await cdp.call("Page.navigate", url=url)
                await cdp.wait_event("Page.loadEventFired")
                value = (await cdp.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"]
                shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                run = PageRun(value=value.get("value"), screenshot=base64.b64decode(shot["data"]))
                for e in cdp.events:
                    p = e.get("params", {})
                    if e.get("method") == "Runtime.exceptionThrown":
                        run.errors.append(str(p.get("exceptionDetails", {}).get("text")))
                    elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                        run.errors.append(str(p.get("args")))
                    elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                        run.errors.append(str(p["entry"].get("text")))
                return run
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def load_page(path: Path, expression: str, *, width: int = 1280) -> PageRun:
    """Open ``path`` in headless Chromium, return errors, ``expression``'s value and a screenshot."""
    return asyncio.run(_run(chromium_or_skip(), path.resolve().as_uri(), expression, width))
