"""`clearcard backup list`, `verify` and `restore`: backups, read and restored on the operator's machine.

The operators' tool runs the backup service's own functions (clearcard/ is the composition root,
docs/architecture.md); the console asks the backup service over the bus instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clearcard.commands.common import JsonOpt, fail, out, print_json, settings_from_env

app = typer.Typer(help="Backups taken before every write-back.", no_args_is_help=True)


@app.command("list")
def backup_list(as_json: JsonOpt = False) -> None:
    """Every backup: id, device, period, taken at, size, locations."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import list_backups

    settings = settings_from_env()

    async def main() -> list[dict[str, Any]]:
        async with infrastructure(settings) as (_, db):
            return await list_backups(db)

    rows = run_async(main)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        out.print(f"{row['id']}  {row['device']}  {row['period']}  {row['taken_at']}  {row['size']} B")


@app.command("verify")
def backup_verify(backup_id: str) -> None:
    """Read every copy back; exit 1 naming each damaged or missing copy."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import verify_backup
    from shared.errors import ClearCardError

    settings = settings_from_env()

    async def main() -> Any:
        async with infrastructure(settings) as (_, db):
            return await verify_backup(db, settings, backup_id)

    try:
        result = run_async(main)
    except (ClearCardError, KeyError, LookupError) as exc:
        raise fail(f"backup {backup_id}: {exc}") from None
    if result.ok:
        sys.stdout.write(f"ok {backup_id}: every copy intact\n")
        return
    for location in result.damaged:
        sys.stdout.write(f"damaged or missing copy: {location}\n")
    raise typer.Exit(1)


@app.command("restore")
def backup_restore(
    backup_id: str,
    to: Annotated[Path, typer.Option("--to", help="Folder to write the decrypted contents into.")],
    force: Annotated[bool, typer.Option(help="Allow another taxpayer or machine number.")] = False,
) -> None:
    """Write a backup's contents, decrypted, into a folder, from any intact copy."""
    from clearcard.runtime import infrastructure, run_async
    from services.backup.service import restore_backup
    from shared.errors import ClearCardError

    settings = settings_from_env()

    async def main() -> Path:
        async with infrastructure(settings) as (_, db):
            return await restore_backup(db, settings, backup_id, to, force=force)

    try:
        where = run_async(main)
    except (ClearCardError, KeyError, LookupError, OSError) as exc:
        raise fail(f"restore of {backup_id} failed: {exc}") from None
    out.print(f"restored {backup_id} into {where}")
