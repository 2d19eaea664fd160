"""Backups as streams: pages checked as they arrive, chunks that cannot be cut, moved or swapped,
version 1 files still readable, and restore that leaves nothing behind from a bad copy."""

from __future__ import annotations

import io
import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from backup_fakes import DEVICE, GATEWAY, TAXPAYER, Harness, invoice_number

from services.backup import (
    chunked,
    list_backups,
    restore_backup,
    rotate_backup_key,
    sealed,
    store,
    verify_backup,
)
from services.backup.restore import PARTS
from shared.bus.topology import COMMANDS
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.messages.backup import BackupTaken, TakeBackup
from shared.messages.base import utc_now

pytestmark = pytest.mark.postgres
KEY = bytes(range(32))


async def _take(h: Harness, request_id: str = "req-1") -> BackupTaken:
    msg = TakeBackup(request_id=request_id, device_id=DEVICE, period="2026-10", gateway_id=GATEWAY)
    with trio.fail_after(30):
        return await h.rpc.call(COMMANDS, "backup.take", msg, BackupTaken)


def _leftovers(settings: Settings) -> list[Path]:
    return [p for d in settings.backup_dirs if d.exists() for p in d.rglob("*") if p.is_file()]


# --- the chunk format on its own -----------------------------------------------------------------


def _file(documents: list[dict[str, Any]], key: bytes = KEY) -> tuple[bytes, list[bytes]]:
    """A version 2 file of `documents` (the last one final), and its chunks as written."""
    sealer = chunked.Sealer("20260101T000000000000Z-abcdef", key)
    chunks = [sealer.chunk(d, final=i == len(documents) - 1) for i, d in enumerate(documents)]
    return sealer.header + b"".join(chunks), chunks


def _read(data: bytes, key: bytes = KEY) -> list[dict[str, Any]]:
    return list(chunked.read_documents(chunked.HashingReader(io.BytesIO(data)), lambda _: key))


DOCS = [{"manifest": {"n": 0}}, {"invoices": [{"n": 1}]}, {"invoices": [{"n": 2}]}, {"end": {"invoice_count": 2}}]


def _split(data: bytes, chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    return data[: len(data) - sum(map(len, chunks))], chunks


def test_a_file_reads_back_chunk_by_chunk() -> None:
    data, _ = _file(DOCS)
    assert _read(data) == DOCS
    source = chunked.HashingReader(io.BytesIO(data))
    list(chunked.read_documents(source, lambda _: KEY))
    assert source.size == len(data)


def _mutations() -> Iterator[tuple[str, bytes]]:
    data, chunks = _file(DOCS)
    header, chunks = _split(data, chunks)
    yield "the final chunk dropped", header + b"".join(chunks[:-1])
    yield "cut inside a chunk", data[:-7]
    yield "two chunks swapped", header + chunks[0] + chunks[2] + chunks[1] + chunks[3]
    yield "a chunk repeated", header + chunks[0] + chunks[1] + chunks[1] + chunks[2] + chunks[3]
    other, other_chunks = _file(DOCS)
    yield "a chunk from another backup", header + chunks[0] + other_chunks[1] + chunks[2] + chunks[3]
    yield "another backup's header", _split(other, other_chunks)[0] + b"".join(chunks)
    yield "bytes after the end", data + b"\0"
    flipped = bytearray(data)
    flipped[len(header) + len(chunks[0]) + 10] ^= 0x01
    yield "one bit flipped", bytes(flipped)
    huge = header + struct.pack(">I", 2**31) + b"\0" * 64
    yield "an impossible chunk length", huge


@pytest.mark.parametrize(("what", "data"), list(_mutations()), ids=[m[0] for m in _mutations()])
def test_a_changed_file_never_reads_back(what: str, data: bytes) -> None:
    with pytest.raises(sealed.CopyDamaged):
        _read(data)


def test_the_wrong_key_reads_nothing() -> None:
    data, _ = _file(DOCS)
    with pytest.raises(sealed.CopyDamaged, match="does not decrypt"):
        _read(data, key=bytes(32))


# --- pages as the backup service takes them ------------------------------------------------------


async def test_a_period_larger_than_any_message_is_backed_up_in_pages(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    harness.gateway.per_type = 2_345
    harness.gateway.page_limit = 150  # the device answers fewer than asked: the cursor carries on
    taken = await _take(harness)
    assert harness.gateway.pages == 2 * 16  # ceil(2,345 / 150) per type, one device command each
    assert (await verify_backup(database, settings, taken.backup_id)).ok
    out = await restore_backup(database, settings, taken.backup_id, tmp_path / "out")
    invoices = json.loads((out / "invoices.json").read_text())
    assert len(invoices) == 4_690 and invoices[-1]["number"] == invoice_number("007", 2_345)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["invoice_count"] == 4_690 and manifest["invoice_counts"] == {"004": 2_345, "007": 2_345}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p}.json" for p in PARTS)


@pytest.mark.parametrize(("fault", "words"), [
    ("short", "gave 2200 of the 2345 invoices"),
    ("repeat", "a page repeated or out of order"),
    ("summary", "do not add up to its period summary: normal amount"),
])
async def test_pages_that_do_not_add_up_fail_the_backup_and_leave_nothing(
    harness: Harness, database: Database, settings: Settings, fault: str, words: str
) -> None:
    harness.gateway.per_type, harness.gateway.fault = 2_345, fault
    with pytest.raises(ClearCardError) as err:
        await _take(harness)
    assert err.value.code is ErrorCode.BACKUP_FAILED and words in err.value.message, err.value.message
    assert await list_backups(database) == []
    assert _leftovers(settings) == []  # the half-written copies were removed


# --- version 1 files and restore ---------------------------------------------------------------


async def test_a_version_1_backup_still_verifies_restores_and_is_repaired(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    key_id, key = sealed.current_key(settings)
    invoices = [{"invoice_type": "004", "code": "0420004", "number": invoice_number("004", n),
                 "issued_at": "2026-10-12T10:00:00+08:00", "amount": "1000.00", "tax": "130.00",
                 "kind": "normal", "offline": False} for n in range(1, 4)]
    snapshot = {"format": 1, "manifest": {"device_id": DEVICE, "taxpayer_id": TAXPAYER, "machine_no": 0,
                                          "period": "2026-10", "invoice_count": 3},
                "invoices": invoices, "summaries": [], "monitoring": {"lock_date": "2026-11-15"},
                "device_record": None}
    blob = sealed.seal(snapshot, key_id, key)
    checksum = sealed.checksum(blob)
    file_name = f"{DEVICE}/{checksum}.ccbk"
    for location in settings.backup_dirs:
        (location / DEVICE).mkdir(parents=True)
        (location / file_name).write_bytes(blob)
    row = store.BackupRow(backup_id="old-v1", device_id=DEVICE, taxpayer_id=TAXPAYER, machine_no=0,
                          family="ukey", period="2026-10", request_id="old", taken_at=utc_now(),
                          size=len(blob), checksum=checksum, key_id=key_id, file_name=file_name,
                          locations=[str(p) for p in settings.backup_dirs])
    await database.run(store.insert, row)
    assert (await verify_backup(database, settings, "old-v1")).ok
    out = await restore_backup(database, settings, "old-v1", tmp_path / "v1")
    assert json.loads((out / "invoices.json").read_text()) == invoices
    # laid out as before version 2, where the whole list went through json.dumps at once
    assert (out / "invoices.json").read_text() == json.dumps(invoices, ensure_ascii=False, indent=2,
                                                             sort_keys=True) + "\n"
    assert json.loads((out / "manifest.json").read_text())["invoice_count"] == 3
    # key rotation rewrites it as a version 2 file with the same contents
    new_key, moved = await rotate_backup_key(database, settings, reencrypt=True)
    assert moved == ["old-v1"]
    [path] = settings.backup_dirs[0].rglob("*.ccbk")
    assert path.read_bytes()[4] == chunked.VERSION and sealed.key_id_of(path.read_bytes()) == new_key
    assert (await verify_backup(database, settings, "old-v1")).ok
    again = await restore_backup(database, settings, "old-v1", tmp_path / "v2")
    assert json.loads((again / "invoices.json").read_text()) == invoices


async def test_restore_skips_a_copy_cut_short_and_leaves_no_part_of_it(
    harness: Harness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    harness.gateway.per_type = 1_500
    taken = await _take(harness)
    primary = next(settings.backup_dirs[0].rglob("*.ccbk"))
    primary.write_bytes(primary.read_bytes()[: primary.stat().st_size // 2])
    out = tmp_path / "out"
    await restore_backup(database, settings, taken.backup_id, out)
    assert len(json.loads((out / "invoices.json").read_text())) == 3_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    secondary = next(settings.backup_dirs[1].rglob("*.ccbk"))
    secondary.write_bytes(secondary.read_bytes()[:-40])
    with pytest.raises(ClearCardError) as err:
        await restore_backup(database, settings, taken.backup_id, tmp_path / "nothing")
    assert err.value.code is ErrorCode.BACKUP_FAILED
    assert not (tmp_path / "nothing").exists()  # a folder the restore made is removed again


async def test_a_copy_left_by_a_writer_that_died_is_swept_on_the_next_take(
    harness: Harness, database: Database, settings: Settings
) -> None:
    planted = []
    for location in settings.backup_dirs:
        folder = location / DEVICE
        folder.mkdir(parents=True, exist_ok=True)
        dead, busy = folder / ".incoming.dead.tmp", folder / ".incoming.busy.tmp"
        dead.write_bytes(b"half a backup")
        busy.write_bytes(b"another replica is writing this one")
        two_hours_ago = time.time() - 7200
        os.utime(dead, (two_hours_ago, two_hours_ago))
        planted.append((dead, busy))
    taken = await _take(harness)
    for dead, busy in planted:
        assert not dead.exists()  # untouched for two hours: its writer is gone
        assert busy.exists()  # touched just now: a take in progress elsewhere is left alone
    assert (await verify_backup(database, settings, taken.backup_id)).ok
