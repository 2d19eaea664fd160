"""The `clearcard` command: every command group lives in clearcard/commands/, one module each."""

from __future__ import annotations

import os

import typer

app = typer.Typer(help="ClearCard: fleet-wide report-and-clear (抄报清卡) of VAT tax-control devices.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _everywhere() -> None:
    """Logs go to stderr for every command: stdout carries only the command's data."""
    from shared import logs

    logs.configure(level=os.environ.get("CLEARCARD_LOG_LEVEL", "WARNING"))


def _register() -> None:
    """Commands first, then groups: `clearcard --help` lists them in this order."""
    from clearcard.commands import (
        audit,
        audit_review,
        backup,
        backup_admin,
        calendar,
        clearing,
        db,
        device,
        dlq,
        emulator,
        fleet,
        identity,
        notify,
        report,
        running,
        token,
        user,
    )

    running.register(app)
    clearing.register(app)
    report.register(app)
    backup_admin.register(backup.app)
    audit_review.register(audit.app)
    for name, group in (("db", db.app), ("token", token.app), ("emulator", emulator.app), ("audit", audit.app),
                        ("backup", backup.app), ("user", user.app), ("notify", notify.app), ("fleet", fleet.app),
                        ("identity", identity.app), ("calendar", calendar.app), ("device", device.app),
                        ("dlq", dlq.app)):
        app.add_typer(group, name=name)


_register()


def main() -> None:
    from clearcard.startup import reachable  # an unreachable broker or database: one line, exit 1

    reachable(app)
