"""`clearcard backup prune | repair | rotate-key | take`: looking after the backups.

`register(backup_app)` adds these commands to the `clearcard backup` group; `app` is the same
commands as a group of their own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer

from clearcard.commands.common import JsonOpt, err, fail, out, print_json, settings_from_env


def _logging() -> None:
    """Logs (and any service started here) go to stderr, never into --json output."""
    from shared import logs

    logs.configure(level=os.environ.get("CLEARCARD_LOG_LEVEL", "WARNING"), json=True)




def prune_command(
    keep: Annotated[int | None, typer.Option(min=1, help="Backups kept per device and period "
                                                         "(default: CLEARCARD_BACKUP_KEEP, else 3).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove backups beyond the newest N per device and period (never the one a write-back relied on)."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.retention import PruneReport, keep_from_env, prune

    _logging()
    settings = settings_from_env()
    try:
        keep = keep_from_env() if keep is None else keep
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    async def main() -> PruneReport:
        async with infrastructure(settings) as (_, db):
            return await prune(db, settings, keep, dry_run=dry_run)

    report = run_async(main)
    if as_json:
        print_json(report.as_json())
    else:
        verb = "would remove" if dry_run else "removed"
        out.print(f"{verb} {len(report.removed)} backup(s), kept {report.kept} (keep {report.keep})")
        for backup_id in report.removed:
            out.print(f"  {backup_id}")
        for leftover in report.leftovers:
            err.print(f"[yellow]could not delete[/yellow] {leftover}")
    if report.leftovers:
        raise typer.Exit(1)


def repair_command(backup_id: str, as_json: JsonOpt = False) -> None:
    """Rewrite a backup's damaged or missing copies from an intact one; exit 1 if it cannot."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.repair import repair_backup
    from shared.errors import ClearCardError

    _logging()
    settings = settings_from_env()

    async def main() -> list[str]:
        async with infrastructure(settings) as (_, db):
            return await repair_backup(db, settings, backup_id)

    try:
        repaired = run_async(main)
    except ClearCardError as exc:
        raise fail(f"backup {backup_id}: {exc.message}") from None
    if as_json:
        print_json({"backup_id": backup_id, "repaired": repaired})
    elif repaired:
        for location in repaired:
            out.print(f"repaired copy: {location}")
    else:
        out.print(f"ok {backup_id}: every copy was intact")


def rotate_key_command(
    reencrypt: Annotated[bool, typer.Option(help="Also re-encrypt every backup under the new key.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a new backup encryption key; new backups use it, old ones keep theirs unless re-encrypted."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.repair import rotate_backup_key
    from shared.errors import ClearCardError

    _logging()
    settings = settings_from_env()

    async def main() -> tuple[str, list[str]]:
        async with infrastructure(settings) as (_, db):
            return await rotate_backup_key(db, settings, reencrypt=reencrypt)

    try:
        key_id, moved = run_async(main)
    except ClearCardError as exc:
        raise fail(exc.message) from None
    if as_json:
        print_json({"key_id": key_id, "reencrypted": moved})
        return
    out.print(f"new backup key {key_id}" + (f"; re-encrypted {len(moved)} backup(s)" if reencrypt else ""))


def take_command(
    device: Annotated[list[str] | None, typer.Option(help="Only these devices; repeatable.")] = None,
    branch: Annotated[str | None, typer.Option(help="Only this branch's devices.")] = None,
    request_id: Annotated[str | None, typer.Option(help="Names this round; the same id never backs a "
                                                        "device up twice.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the backups.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Back up registered devices' open periods now, through the backup service; exit 1 if any failed."""
    import trio

    from clearcard.runtime import identified, infrastructure, run_async, start_services
    from services.backup.schedule import BackupsScheduled, ScheduleBackups
    from shared.bus.rpc import RpcClient
    from shared.bus.topology import COMMANDS
    from shared.errors import ClearCardError

    _logging()
    settings = settings_from_env()
    rid = request_id or f"on-demand-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    try:
        msg = ScheduleBackups(request_id=rid, device_ids=device or [], branch_id=branch)
    except ValueError as exc:
        raise fail(f"invalid request: {exc}", 2) from None

    async def main() -> BackupsScheduled:
        async with infrastructure(settings) as (bus, db), trio.open_nursery() as nursery:
            if settings.embedded_bus:  # nothing else can hear an in-process bus: run what is needed here
                await start_services(nursery, ["gateway", "backup"], bus, db, settings)
            # the backup service answers only signed internal commands: the CLI signs as "cli"
            async with RpcClient.open(identified(bus, "cli", settings), "cli") as rpc:
                with trio.fail_after(timeout):
                    done = await rpc.call(COMMANDS, "backup.schedule", msg, BackupsScheduled)
            nursery.cancel_scope.cancel()
            return done

    try:
        done = run_async(main)
    except ClearCardError as exc:
        raise fail(exc.message) from None
    except trio.TooSlowError:
        raise fail(f"no answer from the backup service within {timeout:g} s") from None
    if as_json:
        print_json(done.model_dump(mode="json"))
    else:
        for r in done.results:
            if r.error_code:
                out.print(f"{r.device_id}  {r.period or '-'}  failed: {r.error_code} {r.error_message}")
            else:
                out.print(f"{r.device_id}  {r.period}  {r.backup_id}")
    if any(r.error_code for r in done.results):
        raise typer.Exit(1)


COMMANDS: dict[str, Callable[..., None]] = {
    "prune": prune_command,
    "repair": repair_command,
    "rotate-key": rotate_key_command,
    "take": take_command,
}


def register(backup_app: typer.Typer) -> None:
    """Add these commands to the `clearcard backup` group."""
    for name, command in COMMANDS.items():
        backup_app.command(name)(command)


app = typer.Typer(help="Looking after backups: retention, repair, key rotation, backups on demand.",
                  no_args_is_help=True)
register(app)
