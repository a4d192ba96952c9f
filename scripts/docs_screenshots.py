"""Screenshots for the documentation, taken from a demo run in headless Chromium, so they can be retaken.

    ZIPP_DATA_DIR=data DAGSTER_HOME=data/dagster_home .venv/bin/python scripts/docs_screenshots.py [--out DIR]

After `make demo`: starts the Dagster UI over the run's instance and the persona studio over its lake,
each on a free loopback port, and photographs what a person looks at (the asset catalog, the ZIPBench
summary and encoder evaluation with their metadata, the runs; the ZIPBench HTML report; the studio's
persona browser and a persona), into docs/screenshots/ by default. Needs Chromium (Debian's package).
The browser driver is the one the studio's browser test uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from zipp_assets import lake  # noqa: E402
from zipp_assets.settings import load_settings  # noqa: E402
from zipp_assets_tests.studio.cdp import INSTALL_HINT, Chromium, Page, find_chromium  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"nothing answered {url} within {timeout:.0f} s")


def start(command: list[str], url: str, env: dict, log: Path, timeout: float = 240) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=REPOSITORY, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_http(url, process, timeout)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


async def photograph_dagster(page: Page, url: str, out: Path) -> list[Path]:
    shots = []

    async def shot(path: str, name: str, ready: str, timeout: float = 60) -> None:
        await page.goto(url + path)
        try:
            await page.wait_for(ready, timeout)
        except TimeoutError:  # a page that never shows its data is reported, never photographed half-drawn
            print(f"warning: {path} did not show its data within {timeout:.0f} s; not photographed", file=sys.stderr)
            return
        await asyncio.sleep(3)  # the UI keeps laying out for a moment after its data arrives
        shots.append(await page.screenshot(out / name, max_height=1600))

    has = "document.body.innerText.includes({!r})".format
    await shot("/assets", "dagster-assets.png", has("zipbench_summary"))
    await shot("/assets/zipbench_summary", "dagster-zipbench-summary.png", has("verdicts"))
    await shot("/assets/encoder_evaluation", "dagster-encoder-evaluation.png", has("posting_accuracy_plot"))
    await shot("/runs", "dagster-runs.png", has("Success"))
    return shots


async def photograph_report(page: Page, report: Path, out: Path) -> list[Path]:
    await page.goto(report.as_uri())
    await page.wait_for("document.readyState === 'complete'")
    return [await page.screenshot(out / "zipbench-report.png", max_height=2400)]


async def photograph_studio(page: Page, url: str, user_id: str, out: Path) -> list[Path]:
    shots = []
    await page.goto(f"{url}/personas/{user_id}")
    await page.wait_for("document.readyState === 'complete'")
    shots.append(await page.screenshot(out / "studio-persona.png", max_height=2000))
    await page.goto(f"{url}/personas?q=&shard=000")
    await page.wait_for("document.readyState === 'complete'")
    shots.append(await page.screenshot(out / "studio-personas.png", max_height=1400))
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "screenshots")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    if not os.environ.get("DAGSTER_HOME"):
        print("set DAGSTER_HOME (and ZIPP_DATA_DIR) to the demo run's instance and data folder", file=sys.stderr)
        return 2
    settings = load_settings()
    report = settings.data_dir / "zipbench" / "report" / "index.html"
    if not report.is_file():
        print(f"no ZIPBench report at {report}: run `make demo` first", file=sys.stderr)
        return 2
    user_id = lake.read_table(settings.lake_dir, "zipbench_users", columns=["user_id"])["user_id"][0].as_py()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONPATH=str(REPOSITORY))
    ui_port, studio_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as scratch:
        scratch = Path(scratch)
        ui = start([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(ui_port),
                    "-w", "workspace.yaml"], f"http://127.0.0.1:{ui_port}/server_info", env, scratch / "ui.log")
        # On loopback the persona browser is open to a visitor without a study session; no editor is needed.
        studio = start([sys.executable, "-m", "zipp_assets.studio", "--host", "127.0.0.1", "--port", str(studio_port)],
                       f"http://127.0.0.1:{studio_port}/", env, scratch / "studio.log")
        browser = Chromium(chromium, scratch / "chromium", width=1400, height=900)
        try:
            websocket = browser.start()

            async def session() -> list[Path]:
                async with Page(websocket) as page:
                    return (await photograph_dagster(page, f"http://127.0.0.1:{ui_port}", args.out)
                            + await photograph_report(page, report, args.out)
                            + await photograph_studio(page, f"http://127.0.0.1:{studio_port}", user_id, args.out))

            taken = asyncio.run(session())
        finally:
            browser.stop()
            stop(studio)
            stop(ui)
    for path in taken:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
