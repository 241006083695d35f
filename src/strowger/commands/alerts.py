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
    from strowger.cli import loaded_or_exit  # late: strowger.cli mounts this app
    from strowger.ops.alerts import AlertSettings, prometheus_rules
    from strowger.settings import load_section

    settings = loaded_or_exit(lambda: load_section(AlertSettings))  # a bad STROWGER_ALERTS_* value
    text = prometheus_rules(settings)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)
