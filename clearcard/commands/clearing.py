"""`clearcard clear` and `clearcard status`: submit and follow a clear; every device's countdown."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clearcard.commands.common import JsonOpt, err, out, print_json, settings_from_env, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(clear)
    app.command()(status)


def clear(
    branch: Annotated[str, typer.Option(help="Branch to clear.")],
    period: Annotated[str, typer.Option(help="Closed tax period, YYYY-MM.")],
    device: Annotated[list[str] | None, typer.Option(help="Only these devices; repeatable.")] = None,
    invoice_type: Annotated[list[str] | None, typer.Option("--type", help="Invoice type codes.")] = None,
    mode: Annotated[str, typer.Option(help="auto or manual.")] = "auto",
    preview: Annotated[bool, typer.Option(help="Only show what would be done.")] = False,
    yes: Annotated[bool, typer.Option(help="Confirm a manual clear without asking.")] = False,
    token: Annotated[str | None, typer.Option(envvar="CLEARCARD_TOKEN", help="Bearer token.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a clear request and follow it to the end; exit 0 only if every device is clear."""
    from clearcard.clear_command import run_clear

    setup_logging()
    code = run_clear(settings_from_env(), out, err, branch=branch, period=period, devices=device or [],
                     types=invoice_type or [], mode=mode, preview=preview, yes=yes, token=token,
                     as_json=as_json)
    raise typer.Exit(code)


def status(
    branch: Annotated[str | None, typer.Option(help="Only this branch.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every device: per-type status, lock date, days left, risk, and the bureau's filing and comparison."""
    from clearcard.runtime import infrastructure, run_async
    from clearcard.status_command import device_status, render_status

    settings = settings_from_env()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await device_status(db, settings, branch)

    rows = run_async(main)
    if as_json:
        print_json(rows)
    else:
        out.print(render_status(rows))
