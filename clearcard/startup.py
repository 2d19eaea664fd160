"""Starting the installation: what cannot start as configured ends in one line, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

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


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    """The exceptions inside nested exception groups (trio nurseries nest them)."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def unreachable(exc: BaseException) -> str | None:
    """What is wrong, in plain words, when the broker or database could not be reached or refused
    us (TLS included); None for anything else."""
    from shared.bus.api import BusError
    from shared.db.pool import DatabaseUnavailable

    leaves = _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    if leaves and all(isinstance(e, BusError | DatabaseUnavailable) for e in leaves):
        return "; ".join(dict.fromkeys(str(e) for e in leaves))
    return None


def reachable(run: Callable[[], object]) -> None:
    """Run the command line; a broker or database that cannot be reached is one line and exit 1."""
    try:
        run()
    except Exception as exc:  # trio nurseries hand these out as (nested) exception groups
        message = unreachable(exc)
        if message is None:
            raise
        sys.stderr.write(f"error: {message}\n")  # one line, whatever the terminal's width
        sys.exit(1)
