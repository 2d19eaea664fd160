"""The audit log: append-only, stored once per record id, and tamper-evident."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio

from services.audit import advance_checkpoint, anchors, export, search, verify_chain
from services.audit import checkpoint as cp
from services.audit.service import handle_record
from services.audit.store import append_record
from shared.bus.api import Delivery, Sender
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
    # as the service identity vouched for it (shared/authz/identity.py; tests/authz covers that)
    delivery = Delivery(exchange="clearcard", routing_key="audit.record", body=encode(record),
                        message_id=record.record_id, sender=Sender(record.service, record.subject, record.at))
    await handle_record(db, settings, delivery)


async def _fill(db: Database, settings: Settings, n: int) -> None:
    await _fill_from(db, settings, 1, n)


async def _fill_from(db: Database, settings: Settings, first: int, last: int) -> None:
    for i in range(first, last + 1):
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
    # every checkpoint is kept, so the first one after the rewrite names it
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 2
    assert "checkpoint" in report.first_bad.reason
    # the service refuses to sign the laundered chain when it appends again
    await _append(database, settings, _record(5))
    key = await trio.to_thread.run_sync(cp.load_or_create_key, settings)
    assert (await trio.to_thread.run_sync(anchors.newest, settings, key.public_key())).seq == 4  # type: ignore[union-attr]
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


def _anchor_files(settings: Settings) -> list[Path]:
    return sorted(p for location in settings.audit_anchors for p in location.glob("checkpoints-*.jsonl"))


async def test_every_checkpoint_is_kept_chained_in_every_anchor_location(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 3)
    files = _anchor_files(settings)
    assert len(files) == 2 and {f.parent for f in files} == set(settings.audit_anchors)
    lines = [cp.parse(line) for line in files[0].read_text().splitlines()]
    assert [c.n for c in lines] == [1, 2, 3] and [c.seq for c in lines] == [1, 2, 3]
    assert [c.prev for c in lines[1:]] == [c.digest for c in lines[:-1]]
    assert files[0].read_text() == files[1].read_text()
    assert (settings.audit_anchors[0] / anchors.PUBLIC).read_bytes() == cp.local_public_key(settings)


async def test_a_forged_or_removed_checkpoint_fails_verification(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 3)
    originals = {f: f.read_text() for f in _anchor_files(settings)}
    for path, text in originals.items():  # the newest checkpoint's seq moved back, everywhere
        lines = text.splitlines()
        forged = json.loads(lines[-1])
        forged["seq"] = 2
        path.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and "signature" in report.first_bad.reason
    for path, text in originals.items():  # checkpoint 2 taken out of the middle
        lines = text.splitlines()
        path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and "checkpoint 2 is missing" in report.first_bad.reason
    for path in originals:  # every checkpoint removed: the log is no longer anchored
        path.unlink()
    report = await verify_chain(database, settings)
    assert not report.ok and not report.anchored
    assert report.describe().startswith("not anchored: 3 records")
    for path, text in originals.items():
        path.write_text(text)
    assert (await verify_chain(database, settings)).ok


async def test_an_older_checkpoint_put_back_and_a_truncated_log_fail_verification(
    database: Database, settings: Settings
) -> None:
    """The attack the single checkpoint file let through: roll the anchor back, cut the log to it."""
    await _fill(database, settings, 3)
    first, second = _anchor_files(settings)
    older = first.read_text()
    await _fill_from(database, settings, 4, 6)
    first.write_text(older)  # the older checkpoint put back where the attacker could reach
    await _tamper(database, "DELETE FROM audit_log WHERE seq > 3")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and report.first_bad.seq == 4
    assert "records 4 to 6 are missing" in report.first_bad.reason
    second.write_text("garbage that is not a checkpoint\n")
    assert not (await verify_chain(database, settings)).ok


async def test_checkpoints_that_differ_between_locations_fail_verification(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 2)
    first, second = _anchor_files(settings)
    key = await trio.to_thread.run_sync(cp.load_or_create_key, settings)
    one = cp.parse(first.read_text().splitlines()[0])
    fork = cp.sign_next(key, one, 2, "f" * 64)  # validly signed, but not what the other location holds
    second.write_text(first.read_text().splitlines()[0] + "\n" + fork.line() + "\n")
    report = await verify_chain(database, settings)
    assert not report.ok and report.first_bad is not None and "differs between" in report.first_bad.reason


async def test_a_location_that_was_away_misses_lines_and_the_other_holds_them(
    database: Database, settings: Settings
) -> None:
    await _fill(database, settings, 2)
    first, _second = _anchor_files(settings)
    kept = first.read_text()
    await _fill_from(database, settings, 3, 4)
    first.write_text(kept)  # location one missed checkpoints 3 and 4 (it was unmounted)
    assert (await verify_chain(database, settings)).ok
    await _fill_from(database, settings, 5, 5)  # the next checkpoint goes to both again
    assert [cp.parse(x).n for x in first.read_text().splitlines()] == [1, 2, 5]
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 5 and report.checkpoint_seq == 5


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


async def test_a_checkpoint_torn_by_a_crash_is_cut_before_the_next(database: Database, settings: Settings) -> None:
    await _fill(database, settings, 2)
    files = _anchor_files(settings)
    for path in files:  # the writer died half-way through a third line
        with path.open("a") as f:
            f.write('{"hash":"ab')
    assert (await verify_chain(database, settings)).ok  # a line without its newline is not a checkpoint
    await _fill_from(database, settings, 3, 3)
    assert [cp.parse(x).n for x in files[0].read_text().splitlines()] == [1, 2, 3]
    report = await verify_chain(database, settings)
    assert report.ok and report.checkpoint_seq == 3
