"""`clearcard audit verify` (a separate process, CLEARCARD_DATABASE_URL set) exits 1 naming the
record when one is rewritten with the triggers bypassed, or when the newest records are deleted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from services.audit.log import advance_checkpoint
from services.audit.store import append_record
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord


async def clearcard(env: dict[str, str], *args: str) -> tuple[int, str]:
    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-m", "clearcard", *args], env=env, check=False,
                                      capture_stdout=True, capture_stderr=True)
    return done.returncode, (done.stdout + done.stderr).decode()


async def seeded(database: Database, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATABASE_URL=database.dsn, CLEARCARD_DATA_DIR=str(tmp_path / "data"))
    settings = Settings.from_env(env)
    for n in range(1, 9):
        await database.run(append_record, AuditRecord(
            record_id=f"r{n}", service="auth", subject="li.wei", action="clear.rejected",
            request_id=f"req-{n}", outcome="rejected", error_code="PERMISSION_DENIED"))
    assert await advance_checkpoint(database, settings) == 8
    return env


async def bypassing_triggers(database: Database, sql: str) -> None:
    async def unit(conn: object) -> None:
        await conn.execute("SET LOCAL session_replication_role = replica")  # type: ignore[attr-defined]
        await conn.execute(sql)  # type: ignore[attr-defined]

    await database.run(unit)


async def test_rewritten_record_is_named(database: Database, tmp_path: Path) -> None:
    env = await seeded(database, tmp_path)
    code, out = await clearcard(env, "audit", "verify")
    assert (code, out.strip()) == (0, "ok 8 records")
    await bypassing_triggers(database, "UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3")
    code, out = await clearcard(env, "audit", "verify")
    assert code == 1 and "record 3" in out, out


async def test_deleted_newest_records_are_named(database: Database, tmp_path: Path) -> None:
    env = await seeded(database, tmp_path)
    await bypassing_triggers(database, "DELETE FROM audit_log WHERE seq > 5")
    code, out = await clearcard(env, "audit", "verify")
    assert code == 1 and "records 6 to 8 are missing" in out, out


async def test_an_older_checkpoint_put_back_with_the_log_cut_to_it_exits_1(database: Database, tmp_path: Path) -> None:
    env = await seeded(database, tmp_path)
    settings = Settings.from_env(env)
    older = {p: p.read_bytes() for loc in settings.audit_anchors for p in loc.glob("checkpoints-*.jsonl")}
    for n in range(9, 12):
        await database.run(append_record, AuditRecord(record_id=f"r{n}", service="auth", subject="li.wei",
                                                      action="auth.login", outcome="ok"))
    assert await advance_checkpoint(database, settings) == 11
    first = sorted(older)[0]
    first.write_bytes(older[first])  # one location rolled back to the checkpoint of record 8
    await bypassing_triggers(database, "DELETE FROM audit_log WHERE seq > 8")
    code, out = await clearcard(env, "audit", "verify")
    assert code == 1 and "records 9 to 11 are missing" in out, out


async def test_a_log_without_any_checkpoint_is_not_anchored(database: Database, tmp_path: Path) -> None:
    env = await seeded(database, tmp_path)
    for location in Settings.from_env(env).audit_anchors:
        for path in location.glob("checkpoints-*.jsonl"):
            path.unlink()
    code, out = await clearcard(env, "audit", "verify")
    assert code == 1 and "not anchored" in out and "ok" not in out.split(), out
