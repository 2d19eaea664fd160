"""Starting the installation: what cannot start as configured ends in one line, not a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from shared.errors import ConfigurationError

T = TypeVar("T")


def configured(run: Callable[[], T], err: Console) -> T:
    """Run `run()`; a ConfigurationError (bad fleet file, no libusb, ...) is one line on `err` and exit 2.

    trio raises exception groups: the configuration error is found inside them. A second
    Ctrl-C (or signal) while shutting down exits 130, quietly.
    """
    try:
        return run()
    except (ConfigurationError, BaseExceptionGroup) as exc:
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[1] is None:
            raise typer.Exit(130) from None
        found: BaseException | None = exc.split(ConfigurationError)[0] if isinstance(exc, BaseExceptionGroup) else exc
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is None:
            raise
        err.print(f"[red]error:[/red] cannot start: {found}", soft_wrap=True)
        raise typer.Exit(2) from None
