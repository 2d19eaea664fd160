"""Schema migrations: numbered SQL files applied once each, under an advisory lock."""

from __future__ import annotations

from importlib import resources

import asyncpg

from shared.db.pool import Database

_LOCK_KEY = 0x434C4541  # 'CLEA': one migrator at a time across replicas


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in shared/db/migrations, in order."""
    found = []
    for entry in resources.files("shared.db.migrations").iterdir():
        if entry.name.endswith(".sql") and entry.name[:4].isdigit():
            found.append((int(entry.name[:4]), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in migration_files():
        if version in done:
            continue
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
        )
        applied.append(name)
    return applied


async def migrate(db: Database) -> list[str]:
    """Bring the schema up to date; returns the files applied (none when already current)."""
    return await db.run(_migrate)
