"""The ``strowger`` command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from strowger import __version__
from strowger.errors import ConfigError
from strowger.settings import Settings, load_settings

T = TypeVar("T")

app = typer.Typer(
    name="strowger",
    help="Strowger: an event-driven BSS/OSS backbone (TM Forum Open APIs over an event bus).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def _mount_subcommands() -> None:
    from strowger.bench.cli import bench_app
    from strowger.commands.alerts import alerts_app
    from strowger.commands.chaos import chaos
    from strowger.commands.cluster import cluster_app
    from strowger.commands.demo import demo
    from strowger.commands.dlq import dlq_app
    from strowger.commands.history import history
    from strowger.commands.projections import projections_app
    from strowger.commands.sagas import sagas_app
    from strowger.commands.trace import trace
    from strowger.commands.verify import verify_app

    app.add_typer(bench_app, name="bench")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(projections_app, name="projections")
    app.add_typer(sagas_app, name="sagas")
    app.command("trace")(trace)
    app.command("history")(history)
    app.command("demo")(demo)
    app.add_typer(cluster_app, name="cluster")
    app.command("chaos")(chaos)
    app.add_typer(verify_app, name="verify")
    app.add_typer(alerts_app, name="alerts")


_mount_subcommands()


def loaded_or_exit(load: Callable[[], T]) -> T:
    """``load()`` (settings of any section), or a one-line message naming the bad setting and
    exit code 2: what every command does with a bad ``STROWGER_*`` value."""
    try:
        return load()
    except ConfigError as exc:
        typer.echo(f"strowger: configuration error: {exc}", err=True)  # one line, never wrapped
        raise typer.Exit(code=2) from None


def settings_or_exit(**overrides: object) -> Settings:
    """The settings, or a one-line message naming the bad setting and exit code 2."""
    return loaded_or_exit(lambda: load_settings(**overrides))


@app.command()
def version() -> None:
    """Print Strowger's version."""
    console.print(f"strowger {__version__}")


@app.command()
def config() -> None:
    """Print the settings in force (from STROWGER_* variables and strowger.toml)."""
    settings = settings_or_exit()
    for name, value in settings.model_dump().items():
        console.print(f"[bold]{name}[/] = {value!r}", highlight=False)


@app.command()
def run(
    component: Annotated[
        str, typer.Argument(help="Component to run, or 'all' for the whole platform")
    ] = "all",
    host: Annotated[str | None, typer.Option(help="Address to serve on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to serve on")] = None,
) -> None:
    """Run the platform (or one component) and serve its HTTP APIs until Ctrl-C."""
    overrides: dict[str, object] = {"component": component}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = settings_or_exit(**overrides)

    import uvicorn

    from strowger.app import create_app
    from strowger.bootstrap import bootstrap
    from strowger.logs import configure_logging
    from strowger.ops.tracing import configure_tracing
    from strowger.security import ensure_admin_credentials, install_redaction, load_security_settings

    security = loaded_or_exit(load_security_settings)
    configure_logging(settings.log_level, json=settings.log_json)
    install_redaction()
    configure_tracing()
    admin_key = ensure_admin_credentials(security, Path("var"))
    platform = bootstrap(settings)
    console.print(
        f"Strowger {__version__}: database [bold]{settings.database}[/], bus [bold]{settings.bus}[/], "
        f"serving on http://{settings.host}:{settings.port} (Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    if admin_key:
        console.print(
            f"admin API key (send as X-API-Key): [bold]{admin_key}[/]", highlight=False, soft_wrap=True
        )
    uvicorn.run(
        create_app(platform, security, freeze_heap=True),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
    )


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # a setting read outside settings_or_exit
        typer.echo(f"strowger: configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
