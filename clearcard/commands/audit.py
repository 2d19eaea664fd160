"""`clearcard audit export` and `verify`: the append-only audit log, read on the operator's machine.

The operators' tool runs the audit service's own functions (clearcard/ is the composition root,
docs/architecture.md); the console asks the audit service over the bus instead.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from clearcard.commands.common import JsonOpt, fail, out, settings_from_env

app = typer.Typer(help="The append-only audit log.", no_args_is_help=True)


@app.command("export")
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
            raise fail(f"--since {since!r} is not an ISO 8601 time", 2) from None
    settings = settings_from_env()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await export(db, when)

    for row in run_async(main):
        sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    del as_json  # always JSON Lines


@app.command("verify")
def audit_verify() -> None:
    """Check the audit chain and its checkpoints: `ok N records`, else the first bad record or `not anchored`."""
    from clearcard.runtime import infrastructure, run_async
    from services.audit.service import verify_chain

    settings = settings_from_env()

    async def main() -> Any:
        async with infrastructure(settings) as (_, db):
            return await verify_chain(db, settings)

    report = run_async(main)
    if report.ok:
        out.print(f"ok {report.count} records")
        return
    raise fail(f"audit log {'damaged: ' if report.anchored else ''}{report.describe()}")
