"""Batched appends keep one chain, store a record id once, and verify."""

from pathlib import Path

from services.audit import store
from services.audit.log import advance_checkpoint, verify_chain
from shared.config import Settings
from shared.db import Database
from shared.messages.audit import AuditRecord


def record(record_id: str) -> AuditRecord:
    return AuditRecord(record_id=record_id, service="test", subject="s", action="step.reported")


async def test_batches_chain_and_skip_duplicates(database: Database, tmp_path: Path) -> None:
    first = await database.run(store.append_records, [record("a"), record("b"), record("a")])
    assert [p.seq if p else None for p in first] == [1, 2, None]
    second = await database.run(store.append_records, [record("b"), record("c")])
    assert [p.seq if p else None for p in second] == [None, 3]
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    assert not (await verify_chain(database, settings)).anchored  # nothing signed for them yet
    assert await advance_checkpoint(database, settings) == 3
    report = await verify_chain(database, settings)
    assert report.ok and report.count == 3
