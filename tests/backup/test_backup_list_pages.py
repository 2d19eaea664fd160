"""The backup list over the bus (backup.admin.list): pages that each fit in a message, branch scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from clearcard.runtime import identified
from services.backup import store
from services.backup.admin import operations
from shared.bus.memory import MemoryBus
from shared.bus.middleware import traced
from shared.bus.rpc import RpcClient, rpc_server
from shared.bus.topology import BACKUP_ADMIN, BACKUP_LIST, COMMANDS, topology_for
from shared.config import Settings
from shared.db import Database
from shared.messages.backup import BackupList, ListBackups
from shared.messages.codec import MAX_MESSAGE_BYTES, encode

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _pages(rpc: RpcClient, request: ListBackups) -> list[BackupList]:
    """Every page: the next is asked after the last backup of the one before."""
    pages: list[BackupList] = []
    with trio.fail_after(60):
        while not pages or pages[-1].after is not None:
            cursor = {"after": pages[-1].after} if pages else {}
            pages.append(await rpc.call(COMMANDS, BACKUP_LIST, request.model_copy(update=cursor), BackupList))
    return pages


async def test_a_long_list_comes_in_pages(database: Database, settings: Settings) -> None:
    for n, branch in enumerate(("wuhan-hankou", "beijing")):
        await database.execute(
            "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, gateway_id) "
            "VALUES ($1, 'ukey', '91420100MA4K000001', $2, 'default')", f"66150000000{n}", branch)
    locations = [f"/srv/backups/location-{k}/a-rather-long-folder-name" for k in range(4)]
    for n in range(300):
        await database.run(store.insert, store.BackupRow(
            backup_id=f"b-{n:03d}", device_id=f"66150000000{n % 2}", taxpayer_id="91420100MA4K000001", machine_no=1,
            family="ukey", period="2026-10", request_id=f"req-{n}", taken_at=T0 + timedelta(seconds=n // 3),
            size=1000, checksum=f"{n:064d}", key_id="k1", file_name=f"x/{n}.ccbk", locations=locations))
    bus = MemoryBus()
    server = identified(bus, "backup", settings)
    await server.declare(topology_for(BACKUP_ADMIN))
    async with trio.open_nursery() as nursery:
        handler = traced("backup", BACKUP_ADMIN.name, rpc_server(server, operations(database, settings)))
        await nursery.start(server.consume, BACKUP_ADMIN.name, handler)
        async with RpcClient.open(identified(bus, "console", settings), "console") as rpc:
            pages = await _pages(rpc, ListBackups())
            scoped = await _pages(rpc, ListBackups(branches=["wuhan-hankou"]))
            one = await _pages(rpc, ListBackups(backup_id="b-007", branches=["wuhan-hankou"]))
        nursery.cancel_scope.cancel()
    assert len(pages) > 2
    assert all(len(encode(p)) < MAX_MESSAGE_BYTES for p in pages)
    listed = [b["backup_id"] for p in pages for b in p.backups]
    assert listed == [row.backup_id for row in await database.run(store.all_backups)]  # each once, in order
    assert [b["backup_id"] for p in scoped for b in p.backups] == [f"b-{n:03d}" for n in range(0, 300, 2)]
    assert [b for p in one for b in p.backups] == []  # b-007 is a device of the other branch
