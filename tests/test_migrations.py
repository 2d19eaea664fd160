"""Migrations create the schema and are safe to run twice."""

from shared.db import Database
from shared.db.migrate import migrate, migration_files
from shared.db.pool import claim_inbox


async def test_migrate_twice_is_a_no_op(database: Database) -> None:
    assert await migrate(database) == []
    rows = await database.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [v for v, _, _ in migration_files()]


async def test_inbox_claims_each_message_once(database: Database) -> None:
    assert await database.run(claim_inbox, "coordinator", "m-1") is True
    assert await database.run(claim_inbox, "coordinator", "m-1") is False
    assert await database.run(claim_inbox, "audit", "m-1") is True
