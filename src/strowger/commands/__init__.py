"""Sub-commands of the ``strowger`` CLI, one typer app per area (mounted by strowger.cli)."""
