"""The dashboard in a real headless browser (Debian's chromium driven by Playwright).

A real uvicorn server runs the whole platform (embedded SQLite bus in a tmp
dir) with the dashboard; an order flows through it, a saga is running, and a
probe consumer dead-letters the order's events until the test lets it succeed.
The page must show the flow map and the saga, and a replay clicked on the page
must take the dead letter out of the dead state (checked through the API).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright  # a dev dependency: missing, the test fails

from strowger.app import create_app
from strowger.bootstrap import Platform, bootstrap
from strowger.bus.runtime import Consumer, UnitOfWork
from strowger.errors import PermanentError
from strowger.events.envelope import Envelope
from strowger.saga import Call, Command, SagaDefinition, SagaEngine, SagaRegistry, Step
from strowger.security import SecuritySettings, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings

pytestmark = pytest.mark.e2e


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "stw_browser-admin"
SAGA_ID = "saga-browser-probe"
ORDER = {
    "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "PO-FIBRE-500"}}],
    "relatedParty": [{"id": "CUST-1", "role": "Customer", "@referredType": "Individual"}],
    "billingAccount": {"id": "BA-1"},
}
PROBE = SagaDefinition(
    "probe",
    steps=(
        Step(
            "reserve",
            Call(
                lambda context: Command("oss.resource.commands", "ProbeReserve", {"id": context.request_id}),
                "ProbeReserved",
                "ProbeReserveFailed",
                timeout=timedelta(minutes=5),
            ),
        ),
    ),
)


@dataclass
class FlakyProbe:
    """A consumer that refuses every event (dead-lettered at once) until ``healthy``."""

    healthy: bool = False
    applied: list[str] = field(default_factory=list)

    async def __call__(self, envelope: Envelope, uow: UnitOfWork) -> None:
        if not self.healthy:
            raise PermanentError(f"probe refuses {envelope.event_type}")
        self.applied.append(envelope.event_id)


@dataclass
class Running:
    url: str
    platform: Platform
    probe: FlakyProbe
    http: httpx.AsyncClient


def security() -> SecuritySettings:
    entry = ApiKeyEntry(name="admin", sha256=hash_api_key(ADMIN_KEY), scopes=("admin",))
    return SecuritySettings(api_keys=(entry,), api_keys_file=None)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    platform = bootstrap(Settings(database_url=f"sqlite:///{tmp_path}/strowger.db"))
    probe = FlakyProbe()
    # Only the creation event: one dead letter per order, and no later event queued behind it.
    platform.add_consumer(
        Consumer(
            "dashboard-probe",
            ("bss.ordering.events",),
            probe,
            event_types=frozenset({"ProductOrderCreateEvent"}),
        )
    )
    config = uvicorn.Config(create_app(platform, security()), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(400):  # uvicorn offers no event for "listening"; 20 s at most
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": ADMIN_KEY}) as http:
            yield Running(url, platform, probe, http)
    finally:
        server.should_exit = True
        await serving


async def start_probe_saga(platform: Platform) -> None:
    engine = SagaEngine(SagaRegistry([PROBE]), platform.sink("saga"))
    async with platform.database.transaction() as tx:
        await engine.start(tx, "probe", {}, saga_id=SAGA_ID, entity_key="PO-probe")


async def first_dead_letter(http: httpx.AsyncClient) -> dict[str, Any]:
    for _ in range(100):
        letters = (await http.get("/dlq", params={"consumer": "dashboard-probe"})).json()
        if letters:
            return dict(letters[0])
        await asyncio.sleep(0.1)
    pytest.fail("the probe consumer never dead-lettered the order event")


async def applied_after_replay(http: httpx.AsyncClient, letter_id: int) -> bool:
    """Replay makes the letter due again; the consumer's runtime applies it and drops the row."""
    for _ in range(150):
        response = await http.get(f"/dlq/{letter_id}")
        if response.status_code == 404:
            return True
        assert response.json()["status"] != "dead", "the replay did not take the letter out of the dead state"
        await asyncio.sleep(0.1)
    return False


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_dashboard_shows_the_flow_and_a_saga_and_replays_a_dead_letter(
    running: Running, browser: Any
) -> None:
    created = await running.http.post("/tmf-api/productOrderingManagement/v4/productOrder", json=ORDER)
    assert created.status_code == 201, created.text
    await start_probe_saga(running.platform)
    letter = await first_dead_letter(running.http)

    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{running.url}/dashboard?key={ADMIN_KEY}")
    assert "key=" not in page.url  # taken once, then out of the address bar and history

    flow = page.get_by_test_id("flow-map")
    await flow.locator('[data-node="topic:bss.ordering.events"]').wait_for()
    await flow.locator('[data-node="producer:ordering"]').wait_for()
    await flow.locator('[data-node="consumer:dashboard-probe"]').wait_for()
    saga_row = page.locator(f'#open-sagas tr[data-saga="{SAGA_ID}"]')
    await saga_row.wait_for()
    assert "reserve" in await saga_row.inner_text()
    assert "running" in await saga_row.inner_text()

    dead_row = page.locator(f'#dlq tr[data-letter="{letter["id"]}"]')
    await dead_row.wait_for()
    assert "probe refuses" in (await dead_row.locator("td").nth(3).get_attribute("title") or "")
    running.probe.healthy = True  # the "fix" is deployed: now the operator replays from the page
    await dead_row.locator('[data-action="replay"]').click()

    await page.locator("#status.ok", has_text="replay").wait_for()
    assert await applied_after_replay(running.http, letter["id"])
    await dead_row.wait_for(state="detached")  # the next poll no longer lists it
    assert running.probe.applied, "the replayed event reached the consumer again"
    assert errors == []


async def test_without_a_key_the_page_asks_for_one(running: Running, browser: Any) -> None:
    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    await page.goto(f"{running.url}/dashboard")
    login = page.get_by_test_id("login")
    await login.wait_for()
    await page.locator("#login-key").fill("stw_wrong")
    await page.locator("#login-form button").click()
    await page.get_by_text("The key was refused.").wait_for()
    await page.locator("#login-key").fill(ADMIN_KEY)
    await page.locator("#login-form button").click()
    await page.locator("#status.ok").wait_for()
    await login.wait_for(state="hidden")


async def finish_probe_saga(platform: Platform, saga_id: str, reply_type: str, **payload: Any) -> None:
    """Start a probe saga for an ``add`` order and answer its one command with ``reply_type``."""
    engine = SagaEngine(SagaRegistry([PROBE]), platform.sink("saga"))
    async with platform.database.transaction() as tx:
        state = await engine.start(tx, "probe", {"orderType": "add"}, saga_id=saga_id)
    command_id = state.steps[0].command_id
    reply = Envelope(event_type=reply_type, payload=payload, entity_key=saga_id, causation_id=command_id)
    async with platform.database.transaction() as tx:
        assert (await engine.handle_reply(tx, reply)).applied


async def test_the_saga_panel_shows_durations_per_order_type_and_the_compensation_rate(
    running: Running, browser: Any
) -> None:
    await finish_probe_saga(running.platform, "probe-done", "ProbeReserved")
    await finish_probe_saga(running.platform, "probe-failed", "ProbeReserveFailed", error="pool 7 empty")

    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{running.url}/dashboard?key={ADMIN_KEY}")

    durations = page.get_by_test_id("saga-durations").locator('tr[data-saga-type="probe"]')
    await durations.wait_for()
    cells = await durations.locator("td").all_inner_texts()
    assert cells[:3] == ["probe", "add", "1"]  # one completed add order; its p50/p95/p99 follow
    compensation = page.get_by_test_id("compensation").locator('[data-saga-type="probe"]')
    await compensation.wait_for()
    text = await compensation.inner_text()
    assert "compensated 1 of 2" in text and "50.0 %" in text
    assert "step reserve failed" in text and "pool 7 empty" in text
    assert errors == []
