"""The `clearcard` command (contract §2). Data goes to stdout, logs to stderr."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from clearcard.startup import configured
from shared.config import Settings

app = typer.Typer(help="ClearCard: fleet-wide report-and-clear (抄报清卡) of VAT tax-control devices.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens for services and scripts.", no_args_is_help=True)
emulator_app = typer.Typer(help="Emulated devices (CLEARCARD_FLEET).", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only audit log.", no_args_is_help=True)
backup_app = typer.Typer(help="Backups taken before every write-back.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(emulator_app, name="emulator")
app.add_typer(audit_app, name="audit")
app.add_typer(backup_app, name="backup")

out = Console()
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")


def _logging(json_logs: bool = True) -> None:
    from shared import logs, telemetry

    logs.configure(level=os.environ.get("CLEARCARD_LOG_LEVEL", "WARNING"), json=json_logs)
    telemetry.configure_from_env()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.callback()
def _everywhere() -> None:
    """Logs go to stderr for every command: stdout carries only the command's data."""
    from shared import logs

    logs.configure(level=os.environ.get("CLEARCARD_LOG_LEVEL", "WARNING"))


@app.command()
def demo(
    console: Annotated[bool, typer.Option("--console", help="Stay up with the web console (prints its URL and a "
                                                           "login) until Ctrl-C.")] = False,
) -> None:
    """Run every service in this process on a sample fleet and clear it, with live progress."""
    from clearcard.demo import run_demo
    from clearcard.demo_console import run_console_demo
    from clearcard.runtime import run_async
    from shared import telemetry

    _logging(json_logs=False)
    settings = _settings()
    try:
        chosen = run_console_demo if console else run_demo
        code = configured(lambda: run_async(lambda: chosen(settings, out)), err)
    finally:
        telemetry.shutdown()
    raise typer.Exit(code)


@app.command()
def serve(services: Annotated[list[str], typer.Argument(help="auth coordinator backup audit gateway "
                                                            "console notify authority-sim, or all")]) -> None:
    """Run the named services in this process until SIGTERM or SIGINT."""
    import signal

    import trio

    from clearcard.runtime import connection_name, infrastructure, resolve, run_async, start_services
    from shared import telemetry

    _logging()
    settings = _settings()
    try:
        names = resolve(services)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
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


@db_app.command("migrate")
def db_migrate(as_json: JsonOpt = False) -> None:
    """Create or upgrade the schema; safe to run twice."""
    from clearcard.runtime import infrastructure, run_async
    from shared.db.migrate import migrate

    settings = _settings()

    async def main() -> list[str]:
        async with infrastructure(settings, run_migrations=False) as (_, db):
            return await migrate(db)

    applied = run_async(main)
    if as_json:
        _print_json({"applied": applied})
    else:
        out.print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@token_app.command("issue")
def token_issue(
    subject: Annotated[str, typer.Option(help="Who the token speaks for.")],
    role: Annotated[str, typer.Option(help="admin, operator, requester, auditor or viewer.")],
    branch: Annotated[list[str] | None, typer.Option(help="Branch in scope ('*' = all); repeatable.")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a signed bearer token (one line)."""
    from shared.authz.roles import Role
    from shared.authz.tokens import KeyRing

    try:
        parsed = Role(role)
    except ValueError:
        raise _fail(f"unknown role {role!r}; choose from {', '.join(r.value for r in Role)}", 2) from None
    branches = branch or (["*"] if parsed == Role.ADMIN else [])
    try:
        token = KeyRing(_settings().keys_dir).issue(subject, parsed, branches, ttl)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    sys.stdout.write(token + "\n")


@app.command()
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

    _logging()
    code = run_clear(_settings(), out, err, branch=branch, period=period, devices=device or [],
                     types=invoice_type or [], mode=mode, preview=preview, yes=yes, token=token,
                     as_json=as_json)
    raise typer.Exit(code)


@app.command()
def status(
    branch: Annotated[str | None, typer.Option(help="Only this branch.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every device: per-type status, lock date, days left, risk, and the bureau's filing and comparison."""
    from clearcard.runtime import infrastructure, run_async
    from clearcard.status_command import device_status, render_status

    settings = _settings()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await device_status(db, settings, branch)

    rows = run_async(main)
    if as_json:
        _print_json(rows)
    else:
        out.print(render_status(rows))


@emulator_app.command("show")
def emulator_show(device: str, as_json: JsonOpt = False) -> None:
    """An emulated device's full state: write-backs, reports, PIN tries, lock date, status."""
    from device_gateway.emulator.admin import show_device
    from shared.errors import ClearCardError

    try:
        state = show_device(_settings(), device)
    except ClearCardError as exc:
        raise _fail(f"{device}: {exc.message}") from None
    if as_json:
        _print_json(state)
    else:
        out.print_json(data=state)


def _emulator_action(device: str, action: str, done: str) -> None:
    """Run one of device_gateway.emulator.admin's marker actions and say what happened."""
    from device_gateway.emulator import admin
    from shared.errors import ClearCardError

    actions = {
        "plug": lambda s: admin.plug(s, device),
        "unplug": lambda s: admin.unplug(s, device),
        "hold": lambda s: admin.hold(s, device, True),
        "release": lambda s: admin.hold(s, device, False),
    }
    try:
        actions[action](_settings())
    except ClearCardError as exc:
        raise _fail(f"{device}: {exc.message}") from None
    err.print(f"{device} {done}")


@emulator_app.command("plug")
def emulator_plug(device: str) -> None:
    """Connect an emulated device (the running gateway finds it again)."""
    _emulator_action(device, "plug", "plugged in")


@emulator_app.command("unplug")
def emulator_unplug(device: str) -> None:
    """Disconnect an emulated device while the gateway runs."""
    _emulator_action(device, "unplug", "unplugged")


@emulator_app.command("hold")
def emulator_hold(device: str) -> None:
    """Let another program (the invoicing software) hold the device: commands get DEVICE_BUSY."""
    _emulator_action(device, "hold", "held by another program")


@emulator_app.command("release")
def emulator_release(device: str) -> None:
    """Release a device held by `emulator hold`."""
    _emulator_action(device, "release", "released")


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="ISO 8601 time; only records from then on.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log as JSON Lines, oldest first."""
    from clearcard.runtime import infrastructure, run_async
    from services.audit.service import export

    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise _fail(f"--since {since!r} is not an ISO 8601 time", 2) from None
    settings = _settings()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await export(db, when)

    for row in run_async(main):
        sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    del as_json  # always JSON Lines


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit chain and its checkpoints: `ok N records`, else the first bad record or `not anchored`."""
    from clearcard.runtime import infrastructure, run_async
    from services.audit.service import verify_chain

    settings = _settings()

    async def main() -> Any:
        async with infrastructure(settings) as (_, db):
            return await verify_chain(db, settings)

    report = run_async(main)
    if report.ok:
        out.print(f"ok {report.count} records")
        return
    raise _fail(f"audit log {'damaged: ' if report.anchored else ''}{report.describe()}")


@backup_app.command("list")
def backup_list(as_json: JsonOpt = False) -> None:
    """Every backup: id, device, period, taken at, size, locations."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import list_backups

    settings = _settings()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await list_backups(db)

    rows = run_async(main)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        out.print(f"{row['id']}  {row['device']}  {row['period']}  {row['taken_at']}  {row['size']} B")


@backup_app.command("verify")
def backup_verify(backup_id: str) -> None:
    """Read every copy back; exit 1 naming each damaged or missing copy."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import verify_backup
    from shared.errors import ClearCardError

    settings = _settings()

    async def main() -> Any:
        async with infrastructure(settings) as (_, db):
            return await verify_backup(db, settings, backup_id)

    try:
        result = run_async(main)
    except (ClearCardError, KeyError, LookupError) as exc:
        raise _fail(f"backup {backup_id}: {exc}") from None
    if result.ok:
        sys.stdout.write(f"ok {backup_id}: every copy intact\n")
        return
    for location in result.damaged:
        sys.stdout.write(f"damaged or missing copy: {location}\n")
    raise typer.Exit(1)


@backup_app.command("restore")
def backup_restore(
    backup_id: str,
    to: Annotated[Path, typer.Option("--to", help="Folder to write the decrypted contents into.")],
    force: Annotated[bool, typer.Option(help="Allow another taxpayer or machine number.")] = False,
) -> None:
    """Write a backup's contents, decrypted, into a folder, from any intact copy."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import restore_backup
    from shared.errors import ClearCardError

    settings = _settings()

    async def main() -> Path:
        async with infrastructure(settings) as (_, db):
            return await restore_backup(db, settings, backup_id, to, force=force)

    try:
        where = run_async(main)
    except (ClearCardError, KeyError, LookupError, OSError) as exc:
        raise _fail(f"restore of {backup_id} failed: {exc}") from None
    out.print(f"restored {backup_id} into {where}")


def _register_subcommands() -> None:
    """Commands that live in clearcard/commands/, one module per area."""
    from clearcard.commands import (
        audit_review,
        backup_admin,
        calendar,
        device,
        dlq,
        fleet,
        identity,
        notify,
        report,
        user,
    )

    backup_admin.register(backup_app)
    audit_review.register(audit_app)
    app.add_typer(user.app, name="user")
    app.add_typer(notify.app, name="notify")
    app.add_typer(fleet.app, name="fleet")
    app.add_typer(identity.app, name="identity")
    app.add_typer(calendar.app, name="calendar")
    app.add_typer(device.app, name="device")
    report.register(app)
    app.add_typer(dlq.app, name="dlq")


_register_subcommands()


def main() -> None:
    from clearcard.startup import reachable  # an unreachable broker or database: one line, exit 1

    reachable(app)
