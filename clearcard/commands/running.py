"""`clearcard demo` and `clearcard serve`: the whole product, or the named services, in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from clearcard.commands.common import err, fail, out, settings_from_env, setup_logging
from clearcard.startup import configured
from shared.config import Settings


def register(app: typer.Typer) -> None:
    app.command()(demo)
    app.command()(serve)


def demo(
    console: Annotated[bool, typer.Option("--console", help="Stay up with the web console (prints its URL and a "
                                                           "login) until Ctrl-C.")] = False,
) -> None:
    """Run every service in this process on a sample fleet and clear it, with live progress."""
    from clearcard.demo import run_demo
    from clearcard.demo_console import run_console_demo
    from clearcard.runtime import run_async
    from shared import telemetry

    setup_logging(json_logs=False)
    settings = settings_from_env()
    try:
        chosen = run_console_demo if console else run_demo
        code = configured(lambda: run_async(lambda: chosen(settings, out)), err)
    finally:
        telemetry.shutdown()
    raise typer.Exit(code)


def serve(services: Annotated[list[str], typer.Argument(help="auth coordinator backup audit gateway "
                                                            "console notify authority-sim, or all")],
          workers: Annotated[int, typer.Option("--workers", min=1, help="Processes to run the services in, to use "
                                               "every core (the gateway and console run in the first only).")] = 1,
          ) -> None:
    """Run the named services in this process (or in --workers processes) until SIGTERM or SIGINT."""
    import signal

    import trio

    from clearcard.runtime import connection_name, infrastructure, resolve, run_async, start_services
    from shared import telemetry

    setup_logging()
    settings = settings_from_env()
    try:
        names = resolve(services)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if workers > 1:
        serve_in_workers(names, workers, settings)
        return
    if settings.embedded_bus and set(names) != set(resolve(["all"])):
        err.print("[yellow]warning:[/yellow] no CLEARCARD_AMQP_URL: the in-process bus only reaches "
                  "services in this process")

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            connection = connection_name(names)
            async with infrastructure(settings, name=connection) as (bus, db), trio.open_nursery() as nursery:
                await start_services(nursery, names, bus, db, settings)
                err.print(f"serving {', '.join(names)}")
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        configured(lambda: run_async(main), err)
    finally:
        telemetry.shutdown()


def serve_in_workers(names: list[str], workers: int, settings: Settings) -> None:
    """`serve --workers N`: a parent that runs N `serve` processes (clearcard/workers.py)."""
    import trio

    from clearcard import workers as pool

    if settings.embedded_bus or settings.database_url is None:
        raise fail("--workers needs CLEARCARD_AMQP_URL and CLEARCARD_DATABASE_URL: the in-process bus and the "
                   "embedded database reach only one process", 2)
    try:
        plans = pool.plan(names, workers)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    try:
        trio.run(pool.supervise, plans)
    except* pool.WorkerCannotStart as group:
        first = group.exceptions[0]
        assert isinstance(first, pool.WorkerCannotStart)
        err.print(f"[red]error:[/red] {first}")
        raise typer.Exit(first.exit_code or 1) from None
