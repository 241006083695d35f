"""``strowger alerts``: the built-in alert rules, for teams that run Prometheus and Alertmanager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

alerts_app = typer.Typer(no_args_is_help=True, help="The alert rules (thresholds from STROWGER_ALERTS_*).")


@alerts_app.command("rules")
def rules(
    out: Annotated[
        Path | None, typer.Option(help="write the rules file here (default: print it)", dir_okay=False)
    ] = None,
) -> None:
    """Print the Prometheus alerting-rules file equivalent to the built-in rules (for ``rule_files:``)."""
    from strowger.errors import ConfigError
    from strowger.ops.alerts import AlertSettings, prometheus_rules
    from strowger.settings import load_section

    try:
        settings = load_section(AlertSettings)
    except ConfigError as exc:  # a bad STROWGER_ALERTS_* value: one line naming it, no trace
        typer.echo(f"strowger: configuration error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    text = prometheus_rules(settings)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)
