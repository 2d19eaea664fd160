"""The audit log: append-only, stored once per record id, and tamper-evident."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import trio

from services.audit import advance_checkpoint, export, search, verify_chain
from services.audit import checkpoint as cp
from services.audit.service import handle_record
from services.audit.store import append_record
from shared.bus.api import Delivery
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord
from shared.messages.codec import encode


def _record(n: int, **extra: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "record_id": f"r-{n}",
        "service": "coordinator",
        "subject": "ops-bot",
        "action": "step.reported",
        "request_id": f"req-{n % 2}",
        "device_id": "661500000001" if n % 2 else "661500000002",
        "branch_id": "wuhan-hankou",
        "outcome": "ok",
        "trace_id": "ab" * 16,
        "detail": {"n": n, "note": "上报汇总", "ratio": 0.1},
    }
    fields.update(extra)
    return AuditRecord(**fields)


async def _append(db: Database, settings: Settings, record: AuditRecord) -> None:
    delivery = Delivery(exchange="clearcard", routing_key="audit.record", body=encode(record),
                        message_id=record.record_id)
    await handle_record(db, settings, delivery)


async def _fill(db: Database, settings: Settings, n: int) -> None:
    for i in range(1, n + 1):
        await _append(db, settings, _record(i))


async def _tamper(db: Database, *statements: str) -> None:
    """Run statements as a superuser who switched the triggers off."""

    async def run(conn: asyncpg.Connection) -> None:
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)

    await db.run(run)


async def test_appended_records_verify_and_export_oldest_first(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 5)
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 5 and report.checkpoint_seq == 5
    assert report.describe() == "ok 5 records"
    rows = await export(database, None)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["detail"] == {"n": 1, "note": "上报汇总", "ratio": 0.1}
    json.dumps(rows)  # JSON Lines ready
    assert rows[1]["prev_hash"] == rows[0]["hash"]


async def test_export_since_and_search(database: Database, settings: Settings) -> None:
    base = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    for i in range(1, 5):
        await _append(database, settings, _record(i, at=base + timedelta(hours=i)))
    assert [r["seq"] for r in await export(database, base + timedelta(hours=3))] == [3, 4]
    by_device = await search(database, device_id="661500000001")
    assert [r["record_id"] for r in by_device] == ["r-1", "r-3"]
    by_request = await search(database, request_id="req-0", since=base + timedelta(hours=3))
    assert [r["record_id"] for r in by_request] == ["r-4"]
    assert len(await search(database, branch_id="wuhan-hankou", subject="ops-bot")) == 4
    assert await search(database, until=base + timedelta(hours=1)) == []


async def test_a_redelivered_record_is_stored_once(database: Database, settings: Settings) -> None:
    await _append(database, settings, _record(1))
    await _append(database, settings, _record(1))
    await _append(database, settings, _record(2))
    assert [r["record_id"] for r in await export(database, None)] == ["r-1", "r-2"]
    assert (await verify_chain(database, settings)).ok


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET subject = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
    ],
)
async def test_updates_deletes_and_truncates_are_refused(
    database: Database, settings: Settings, sql: str
) -> None:
    await _fill(database, settings, 2)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await database.execute(sql)
    assert len(await export(database, None)) == 2


async def test_a_record_rewritten_with_triggers_bypassed_is_named(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 5)
    await _tamper(database, "UPDATE audit_log SET outcome = 'failed' WHERE seq = 3")
    report = await verify_chain(database, settings)
    assert not report.ok
    assert report.first_bad is not None and report.first_bad.seq == 3
    assert "altered" in report.first_bad.reason
    assert report.describe().startswith("bad record 3:")


async def test_a_rewrite_with_every_hash_recomputed_is_caught_by_the_checkpoint(
    database: Database, settings: Settings
) -> None:
    from services.audit.chain import GENESIS, chain_hash
    from services.audit.store import FIELDS

    await _fill(database, settings, 4)
    await _tamper(database, "UPDATE audit_log SET subject = 'mallory' WHERE seq = 2")
    # the attacker knows the algorithm and re-chains everything after the rewrite
    rows = await database.fetch("SELECT * FROM audit_log ORDER BY seq")
    prev = GENESIS
    statements = []
    for row in rows:
        digest = chain_hash(row["seq"], {f: row[f] for f in FIELDS}, prev)
        statements.append(
            f"UPDATE audit_log SET prev_hash = '{prev}', hash = '{digest}' WHERE seq = {row['seq']}"
        )
        prev = digest
    await _tamper(database, *statements)
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 4
    assert "checkpoint" in report.first_bad.reason
    # the service refuses to sign the laundered chain when it appends again
    await _append(database, settings, _record(5))
    assert (await trio.to_thread.run_sync(cp.read_checkpoint, settings)).seq == 4  # type: ignore[union-attr]
    assert not (await verify_chain(database, settings)).ok


async def test_deleting_the_newest_records_fails_verification(database: Database, settings: Settings) -> None:
    await _fill(database, settings, 6)
    await _tamper(database, "DELETE FROM audit_log WHERE seq > 4")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None
    assert report.first_bad.seq == 5 and "missing" in report.first_bad.reason


async def test_a_removed_record_in_the_middle_is_named(database: Database, settings: Settings) -> None:
    await _fill(database, settings, 5)
    await _tamper(database, "DELETE FROM audit_log WHERE seq = 2")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 2
    assert "missing" in report.first_bad.reason


async def test_reordered_records_fail_verification(database: Database, settings: Settings) -> None:
    await _fill(database, settings, 4)
    await _tamper(
        database,
        "UPDATE audit_log SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 1000",
    )
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 2


async def test_a_forged_or_removed_checkpoint_fails_verification(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 3)
    path = cp.checkpoint_path(settings)
    original = path.read_text()
    forged = json.loads(original)
    forged["seq"] = 2
    path.write_text(json.dumps(forged))
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and "signature" in report.first_bad.reason
    path.unlink()
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and "missing" in report.first_bad.reason
    path.write_text(original)
    assert (await verify_chain(database, settings)).ok


async def test_concurrent_appends_from_two_replicas_keep_one_chain(
    database: Database, database_url: str, settings: Settings
) -> None:
    async with Database.open(database_url) as replica, trio.open_nursery() as nursery:
        for i in range(1, 41):
            nursery.start_soon(_append, database if i % 2 else replica, settings, _record(i))
            if i % 10 == 0:
                nursery.start_soon(_append, replica, settings, _record(i))  # a duplicate too
    rows = await export(database, None)
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert sorted(r["record_id"] for r in rows) == sorted(f"r-{i}" for i in range(1, 41))
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 40 and report.checkpoint_seq == 40


async def test_an_unanchored_append_is_anchored_on_the_next_advance(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 2)
    await database.run(append_record, _record(3))  # as if the service crashed before signing
    assert await advance_checkpoint(database, settings) == 3
    assert await advance_checkpoint(database, settings) is None
    assert (await verify_chain(database, settings)).checkpoint_seq == 3


async def test_an_empty_log_verifies(database: Database, settings: Settings) -> None:
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 0 and report.describe() == "ok 0 records"
