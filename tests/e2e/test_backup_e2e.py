"""Backups you can trust, end to end: the whole system in this process on real PostgreSQL, and the
`clearcard` command against the same database and data dir.

- no write-back happens when a backup cannot be written or verified (BACKUP_FAILED);
- a location whose every file is damaged is named by `backup verify`, and `backup restore` still
  yields the period's invoices from the other; no stored file holds plain invoice data;
- the product database survives `pg_dump -Fc` / `pg_restore` into an empty database.
"""

from __future__ import annotations

import json
import shutil
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from clearcard.follow import Followed
from device_gateway.emulator.admin import show_device
from services.backup import storage
from shared.db import Database
from shared.db.migrate import migrate
from tests.support.processes import cli
from tests.support.servers import fresh_database, missing
from tests.support.system import System, Transport, start_system

pytestmark = pytest.mark.postgres
UKEY, DISK = "661500000001", "539900000004"


def running(tmp_path: Path, db: Database, transport: Transport = "memory",
            **extra: str) -> AbstractAsyncContextManager[System]:
    """Every service in this process on `db` and the test's data dir, no scheduled backups."""
    return start_system(tmp_path, db, env={"CLEARCARD_BACKUP_SCHEDULE": "off", **extra}, transport=transport)


def _assert_backup_failed(run: System, followed: Followed) -> None:
    final = followed.final
    assert final["event"] == "clear.finished" and final["status"] == "failed", final
    for result in final["results"]:
        assert result["outcome"] == "failed" and result["error"]["code"] == "BACKUP_FAILED", result
    for device_id in (UKEY, DISK):
        assert show_device(run.settings, device_id)["writebacks"] == []
        steps = [e["step"] for e in followed.events if e["event"] == "clear.progress" and e["device_id"] == device_id]
        assert "backed_up" not in steps and "written_back" not in steps


async def test_an_unwritable_location_means_no_writeback(tmp_path: Path, database: Database,
                                                        transport: Transport) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a backup location should be")
    dirs = f"{tmp_path / 'good'}:{blocker}"
    async with running(tmp_path, database, transport, CLEARCARD_BACKUP_DIRS=dirs) as run:
        _assert_backup_failed(run, await run.clear())
        listed = json.loads((await cli(run.env, "backup", "list", "--json")).stdout)
    assert listed == []


async def test_a_location_that_damages_what_it_stores_means_no_writeback(
    tmp_path: Path, database: Database, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = storage.NewCopies.commit

    def lying_disk(self: storage.NewCopies, file_name: str) -> None:
        commit(self, file_name)
        stored = self.locations[-1] / file_name  # the last location flips a bit right after the write
        damaged = bytearray(stored.read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        stored.write_bytes(bytes(damaged))

    monkeypatch.setattr(storage.NewCopies, "commit", lying_disk)
    async with running(tmp_path, database, transport) as run:
        _assert_backup_failed(run, await run.clear())


async def test_a_damaged_location_is_named_and_restore_uses_the_other(tmp_path: Path, database: Database,
                                                                      transport: Transport) -> None:
    async with running(tmp_path, database, transport) as run:
        followed = await run.clear(device_ids=[UKEY])
        assert followed.final["status"] == "succeeded", followed.final
        [result] = followed.final["results"]
        backup_id = result["backup_id"]
        primary, secondary = run.settings.backup_dirs
        stored = [p for p in primary.rglob("*") if p.is_file()]
        assert stored
        for path in stored:
            path.write_bytes(b"\0" * path.stat().st_size)
        verify = await cli(run.env, "backup", "verify", backup_id, check=False)
        restored = tmp_path / "restored"
        done = await cli(run.env, "backup", "restore", backup_id, "--to", str(restored), check=False)
    assert verify.returncode == 1
    assert str(primary) in verify.stdout.decode() and str(secondary) not in verify.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads((restored / "manifest.json").read_text())
    assert manifest["device_id"] == UKEY and manifest["period"] == "2026-10"
    invoices = json.loads((restored / "invoices.json").read_text())
    assert {i["invoice_type"] for i in invoices} == {"004", "007", "026"} and len(invoices) == 15
    secrets = {i["number"].encode() for i in invoices} | {manifest["taxpayer_id"].encode(), b"invoice"}
    for path in [p for d in run.settings.backup_dirs for p in d.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), f"plain invoice data in {path}"


async def test_the_product_database_survives_pg_dump_and_pg_restore(
    tmp_path: Path, database: Database, database_url: str
) -> None:
    # memory bus only: this is about PostgreSQL, and the commands run while no system does
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        missing("pg_dump and pg_restore", "apt-get install postgresql-client")
    async with running(tmp_path, database) as run:
        first = await run.clear(device_ids=[UKEY])
        assert first.final["status"] == "succeeded", first.final
    dump = tmp_path / "clearcard.dump"
    with trio.fail_after(60):
        await trio.run_process(["pg_dump", "-Fc", "--no-owner", "-f", str(dump), "-d", database_url])
    async with fresh_database(prefix="cc_restored") as restored_url:
        with trio.fail_after(60):
            await trio.run_process(["pg_restore", "--no-owner", "--exit-on-error", "-d", restored_url, str(dump)])
        env = {**run.env, "CLEARCARD_DATABASE_URL": restored_url}
        migrated = json.loads((await cli(env, "db", "migrate", "--json")).stdout)
        assert migrated == {"applied": []}
        status = {row["device_id"]: row for row in json.loads((await cli(env, "status", "--json")).stdout)}
        assert set(status[UKEY]["types"].values()) == {"cleared"}
        assert set(status[DISK]["types"].values()) == {"needs_report"}
        verified = await cli(env, "audit", "verify", check=False)
        assert verified.returncode == 0 and verified.stdout.decode().startswith("ok "), verified
        listed = json.loads((await cli(env, "backup", "list", "--json")).stdout)
        assert [b["id"] for b in listed] == [first.final["results"][0]["backup_id"]]
        async with Database.open(restored_url) as restored:
            assert await migrate(restored) == []
            async with running(tmp_path, restored) as run_again:
                second = await run_again.clear()
        outcomes = {r["device_id"]: r["outcome"] for r in second.final["results"]}
        assert outcomes == {UKEY: "already_cleared", DISK: "cleared"}, second.final
        verified = await cli(env, "audit", "verify", check=False)
        assert verified.returncode == 0, verified


def test_the_dump_command_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "operations" / "database-backup.md").read_text(encoding="utf-8")
    assert "pg_dump -Fc" in text and "pg_restore" in text and "clearcard db migrate" in text
    backups = (Path(__file__).parents[2] / "docs" / "operations" / "backups.md").read_text(encoding="utf-8")
    assert "CLEARCARD_BACKUP_KEEP" in backups and "CLEARCARD_BACKUP_SCHEDULE" in backups
