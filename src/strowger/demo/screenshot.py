"""A screenshot of the live dashboard while the demo runs (``strowger demo --screenshot PATH``).

The page is opened in Debian's chromium through Playwright (as the headless-browser
test does) when the run starts, so its charts have history; the shot is taken once a
given fraction of the orders has settled, i.e. mid-run, with sagas in flight, events on
the flow map's edges and the first compensations in the saga panel. Playwright is a
development dependency (``pip install -e '.[dev]'``): it is imported only here.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

VIEWPORT = {"width": 1366, "height": 768}  # a common laptop screen: the overview must fit it
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PAGE_POLL_SECONDS = 2.0  # the dashboard's own refresh period


class ScreenshotUnavailable(RuntimeError):
    """Playwright or chromium is missing, or the dashboard did not load."""


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise ScreenshotUnavailable("no chromium on PATH (Debian: apt-get install chromium)")
    return found


class DashboardCamera:
    """Opens ``/dashboard`` of a running platform and writes one PNG when :meth:`progress` says so."""

    def __init__(self, base_url: str, api_key: str, out: Path, *, at: float = 0.5) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.out = out
        self.at = at  # fraction of the orders settled when the shot is taken
        self.taken = False
        self._due = asyncio.Event()
        self._playwright: Any = None
        self._browser: Any = None
        self._page: Any = None

    async def __aenter__(self) -> DashboardCamera:
        try:
            from playwright.async_api import async_playwright
        except ImportError as error:
            raise ScreenshotUnavailable("--screenshot needs Playwright: pip install -e '.[dev]'") from error
        executable = chromium_path()
        self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            self._page = await self._browser.new_page(viewport=VIEWPORT)
            # The key in the query string is taken by the page and removed from its address at once.
            await self._page.goto(f"{self.base_url}/dashboard?key={self.api_key}")
            await self._page.wait_for_selector("[data-testid=status].ok", timeout=30_000)
        except Exception as error:  # no dashboard there, a refused key, chromium crashed
            await self._close()
            detail = str(error).replace(self.api_key, "***") if self.api_key else str(error)
            raise ScreenshotUnavailable(
                f"the dashboard at {self.base_url}/dashboard did not load: {detail}"
            ) from None  # the chained error's text would show the key again
        except BaseException:
            await self._close()
            raise
        return self

    def progress(self, submitted: int, settled: int, total: int) -> None:
        """The demo's progress callback: the shot is due once ``at`` of the orders have settled."""
        if total and settled >= self.at * total:
            self._due.set()

    @property
    def due(self) -> bool:
        return self._due.is_set()

    async def shoot_when_due(self) -> None:
        await self._due.wait()
        await self.shoot()

    async def shoot(self) -> None:
        """Let the page draw the latest poll, then write the PNG (once)."""
        if self.taken or self._page is None:
            return
        self.taken = True
        await asyncio.sleep(PAGE_POLL_SECONDS + 0.5)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        await self._page.screenshot(path=str(self.out))

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                await self.shoot()  # the run ended before the fraction was reached: shoot the end
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        self._browser = self._playwright = self._page = None
