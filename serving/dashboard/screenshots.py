"""Screenshots of every dashboard page, for a person to look at (``oihedge dashboard
--screenshots DIR``; ``make demo`` keeps them in ``demo-out/dashboard/``).

The app is served on a free loopback port in a thread and Debian's chromium (never a
downloaded browser) is driven by Playwright, a development dependency.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oihedge.serving.dashboard.app import create_app
from oihedge.serving.dashboard.settings import DashboardSettings

#: the browser the screenshots and the browser tests use (apt package ``chromium``)
CHROMIUM = Path("/usr/bin/chromium")
#: page name -> path, in the navigation's order (the newest decisions only: a picture of
#: hundreds of table rows is slow to take and no easier to read)
PAGES = {
    "live": "/live",
    "timeline": "/timeline",
    "decisions": "/decisions?limit=60",
    "models": "/models",
    "backtest": "/backtest",
}


@dataclass(frozen=True)
class Shots:
    """The PNG files written, and the console errors each page logged (none expected)."""

    files: list[Path]
    errors: dict[str, list[str]]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(settings: DashboardSettings, *, log_level: str = "warning") -> Iterator[str]:
    """The dashboard served by uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=free_port(), log_level=log_level
        )
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def take_screenshots(settings: DashboardSettings, out: Path) -> Shots:
    """One full-page PNG per page of :data:`PAGES` in ``out`` (``<page>.png``). Raises
    ``FileNotFoundError`` when chromium is not at :data:`CHROMIUM`."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"no chromium at {CHROMIUM}: apt-get install --no-install-recommends chromium"
        )
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    files, errors = [], {}
    with serving(settings) as base, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            for name, path in PAGES.items():
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                seen: list[str] = []
                page.on("console", lambda m, seen=seen: m.type == "error" and seen.append(m.text))
                page.on("pageerror", lambda e, seen=seen: seen.append(str(e)))
                page.goto(base + path, wait_until="load")
                if name == "timeline" and page.locator(".chart").count():
                    page.wait_for_selector(".chart .main-svg", timeout=15_000)
                target = out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                page.close()
                files.append(target)
                errors[name] = seen
        finally:
            browser.close()
    return Shots(files, errors)
