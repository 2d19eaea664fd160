"""`clearcard db`: the database schema."""

from __future__ import annotations

import typer

from clearcard.commands.common import JsonOpt, out, print_json, settings_from_env

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("migrate")
def db_migrate(as_json: JsonOpt = False) -> None:
    """Create or upgrade the schema; safe to run twice."""
    from clearcard.runtime import infrastructure, run_async
    from shared.db.migrate import migrate

    settings = settings_from_env()

    async def main() -> list[str]:
        async with infrastructure(settings, run_migrations=False) as (_, db):
            return await migrate(db)

    applied = run_async(main)
    if as_json:
        print_json({"applied": applied})
    else:
        out.print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
