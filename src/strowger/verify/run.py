"""``strowger verify sagas``: start a platform, run the fault matrix, check the invariants, report.

By default the platform runs embedded (SQLite + the embedded bus) in a
throwaway directory, so the command needs no services and leaves nothing
behind; ``settings`` can point it at PostgreSQL and a broker instead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from strowger.app import create_app
from strowger.components.faults import CommandFaults
from strowger.security import SecuritySettings, hash_api_key
from strowger.security.settings import ApiKeyEntry
from strowger.settings import Settings
from strowger.verify.invariants import INVARIANTS, Verdict, check
from strowger.verify.matrix import Outcome, run_matrix
from strowger.verify.platform import verification_platform, verification_timings


@dataclass(frozen=True)
class Report:
    outcomes: Sequence[Outcome]
    verdicts: Sequence[Verdict]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(o.as_expected and v.ok for o, v in zip(self.outcomes, self.verdicts, strict=True))


async def verify_sagas(settings: Settings, *, timeout: float = 2.0, budget: float = 90.0) -> Report:
    """Run the whole matrix on a platform built from ``settings``; the report."""
    began = time.monotonic()
    key = f"stw_verify-{secrets.token_hex(16)}"
    entry = ApiKeyEntry(name="verify", sha256=hash_api_key(key), scopes=("admin",))
    security = SecuritySettings.model_validate({"api_keys": (entry,), "api_keys_file": None})
    headers = {"X-API-Key": key}
    timings = verification_timings(timeout)
    faults = CommandFaults()
    platform = verification_platform(settings, timings, faults)
    app = create_app(platform, security)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strowger", timeout=30) as client:
            outcomes = await run_matrix(client, headers, faults, timings, budget=budget)
            verdicts = await check(platform, client, headers, outcomes)
    return Report(outcomes, verdicts, time.monotonic() - began)


def _mark(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[bold red]FAIL[/]"


def render(report: Report, console: Console) -> None:
    """The matrix as a table, then every problem found, one line each."""
    table = Table(
        "saga", "injection point", "outcome", "expected", *INVARIANTS, "s", title="Saga fault matrix"
    )
    for outcome, verdict in zip(report.outcomes, report.verdicts, strict=True):
        shown = f"{outcome.status} (quarantined, operator retry)" if outcome.quarantined else outcome.status
        table.add_row(
            outcome.saga_type,
            outcome.injection.label,
            shown,
            _mark(outcome.as_expected),
            *(_mark(verdict.holds(name)) for name in INVARIANTS),
            f"{outcome.seconds:.1f}",
        )
    console.print(table)
    for outcome, verdict in zip(report.outcomes, report.verdicts, strict=True):
        where = f"{outcome.saga_type} / {outcome.injection.label} (saga {outcome.saga_id or '-'})"
        for problem in outcome.problems:
            console.print(f"[red]{where}: {problem}[/]", highlight=False)
        for invariant, problems in verdict.problems.items():
            for problem in problems:
                console.print(f"[red]{where}: {invariant}: {problem}[/]", highlight=False)
    verdict_text = "[green]all invariants hold[/]" if report.ok else "[bold red]INVARIANTS VIOLATED[/]"
    console.print(
        f"{len(report.outcomes)} scenarios in {report.seconds:.1f}s: {verdict_text}", highlight=False
    )
