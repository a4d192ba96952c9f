"""A small driver for a real headless Chromium over the DevTools protocol (no chromedriver): start the
browser, open its page target, navigate, read the DOM, click, type, take screenshots.

Clicks and typing go through the page's DOM like a person's (`element.click()`, setting a field's value
and firing `input`); DevTools evaluation is not subject to the page's CSP, which allows no script.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = ("Chromium is not installed: `sudo apt-get install -y chromium` (Debian/Ubuntu) or put a "
                "Chromium/Chrome binary on PATH")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium process with a private profile, DevTools on a free loopback port."""

    def __init__(self, binary: str, profile_dir: Path, width: int = 1280, height: int = 900):
        self.binary, self.profile_dir = binary, Path(profile_dir)
        self.width, self.height = width, height
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> str:
        """Start the browser; returns the page target's DevTools websocket URL."""
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self.profile_dir}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if port_file.is_file() and port_file.read_text().strip():
                port = int(port_file.read_text().splitlines()[0])
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                        pages = [t for t in json.load(response) if t["type"] == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(20)


class Page:
    """One page over a DevTools websocket: commands by id, events ignored except what `wait_for` polls."""

    def __init__(self, websocket_url: str):
        self.url = websocket_url
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}

    async def __aenter__(self) -> Page:
        self._socket = await connect(self.url, max_size=None)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self._socket.close()

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message)
            future = self._pending.pop(data.get("id"), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        number = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        await self._socket.send(json.dumps({"id": number, "method": method, "params": params or {}}))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}: {expression[:200]}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def wait_for(self, condition: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if await self.evaluate(f"!!({condition})"):
                    return
            except RuntimeError:
                pass  # the page is being replaced by a navigation
            await asyncio.sleep(0.1)
        raise TimeoutError(f"waited {timeout}s for {condition!r} on {await self.evaluate('location.href')}")

    async def text(self) -> str:
        return await self.evaluate("document.body.innerText")

    async def path(self) -> str:
        return await self.evaluate("location.pathname")

    async def fill(self, selector: str, value: str) -> None:
        await self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) throw new Error('no element ' + {json.dumps(selector)});
            if (e.type === 'checkbox') {{ e.checked = {json.dumps(bool(value))}; }} else {{ e.value = {json.dumps(value)}; }}
            e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}}));
            return true; }})()""")

    async def click_and_wait(self, selector: str, path_condition: str, timeout: float = 30.0) -> None:
        """Click an element (a submit button, a link) and wait until the next page has loaded and satisfies
        `path_condition` (a JS expression)."""
        marker = f"zipp-{next(self._ids)}"
        await self.evaluate(f"document.documentElement.dataset.before = {json.dumps(marker)}")
        await self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) throw new Error('no element ' + {json.dumps(selector)}); e.click(); return true; }})()""")
        await self.wait_for(f"document.documentElement.dataset.before !== {json.dumps(marker)} && "
                            f"document.readyState === 'complete' && ({path_condition})", timeout)

    async def screenshot(self, path: Path, max_height: int = 2400) -> Path:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": min(size["width"], 1280), "height": min(size["height"], max_height), "scale": 1}
        shot = await self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
