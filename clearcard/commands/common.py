"""What every command shares: its consoles, the `--json` option, settings from the environment,
JSON output, logging and failing with one line."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from shared.config import Settings

out = Console()
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]


def settings_from_env() -> Settings:
    """The settings, or exit 2 naming what is wrong with the environment."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def setup_logging(json_logs: bool = True) -> None:
    from shared import logs, telemetry

    logs.configure(level=os.environ.get("CLEARCARD_LOG_LEVEL", "WARNING"), json=json_logs)
    telemetry.configure_from_env()


def fail(message: str, code: int = 1) -> typer.Exit:
    """The exit to raise after printing `error: message` on stderr."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)
