"""Lease fencing on real PostgreSQL: only the holder of the current fencing number writes."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
import trio

from services.coordinator import leases
from services.coordinator import repository as repo
from shared.db import Database

pytestmark = pytest.mark.postgres
DEVICE = "661500000011"


async def _request(db: Database, request_id: str, owner: str | None, lease: float = 30.0) -> list[repo.Work]:
    async def unit(conn: asyncpg.Connection) -> list[repo.Work]:
        await conn.execute(
            "INSERT INTO devices (device_id, family, taxpayer_id, branch_id, machine_no, gateway_id)"
            " VALUES ($1, 'ukey', '91420100MA4K0001XK', 'wuhan', 0, 'default') ON CONFLICT DO NOTHING", DEVICE)
        await repo.accept_request(
            conn, request_id=request_id, branch_id="wuhan", period="2026-10", mode="auto", invoice_types=[],
            subject="op", trace_id="0" * 32, traceparent=None, reply_to=None, correlation_id=None,
            device_ids=[DEVICE], owner=owner, lease=lease)
        return await repo.leased_work(conn, request_id, owner) if owner else []

    return await db.run(unit)


async def _expire(db: Database, request_id: str) -> None:
    await db.execute("UPDATE device_clears SET lease_until = now() - interval '1 second' WHERE request_id = $1",
                     request_id)


async def _row(db: Database, request_id: str) -> asyncpg.Record:
    [row] = await db.fetch("SELECT * FROM device_clears WHERE request_id = $1", request_id)
    return row


async def test_a_replica_whose_lease_was_taken_over_writes_nothing(database: Database) -> None:
    [a] = await _request(database, "r-1", "coordinator-a")
    assert (a.lease_owner, a.lease_epoch) == ("coordinator-a", 1)
    await database.run(repo.save_step, a, "prechecked", {"types": ["004"]})
    # A's lease expires (a database pause longer than the lease): B takes the clear over
    await _expire(database, "r-1")
    assert await database.run(leases.claim_work, "coordinator-a", 10) == []  # never its own
    [b] = await database.run(leases.claim_work, "coordinator-b", 10)
    assert (b.lease_owner, b.lease_epoch, b.step) == ("coordinator-b", 2, "prechecked")

    for write in (lambda conn: repo.save_step(conn, a, "backed_up", {"types": ["004"], "from": "a"}),
                  lambda conn: repo.begin_writeback(conn, dataclasses.replace(a, step="declaration_checked")),
                  lambda conn: repo.finish_device(conn, a, "failed", "TIMEOUT", "a's late verdict")):
        with pytest.raises(repo.LeaseLost):
            await database.run(write)
    row = await _row(database, "r-1")
    assert (row["step"], row["outcome"], row["writeback_started"]) == ("prechecked", None, False)
    assert await database.run(leases.renew_leases, "coordinator-a", [("r-1", DEVICE, 1)]) == {("r-1", DEVICE)}
    assert await database.run(leases.renew_leases, "coordinator-b", [("r-1", DEVICE, 2)]) == set()

    await database.run(repo.save_step, b, "backed_up", {"types": ["004"]}, "backup-1")
    assert await database.run(repo.finish_device, b, "cleared", None, None) is not None
    row = await _row(database, "r-1")
    assert (row["step"], row["outcome"], row["backup_id"]) == ("backed_up", "cleared", "backup-1")
    with pytest.raises(repo.LeaseLost):  # finished: nobody writes to it any more
        await database.run(repo.save_step, b, "verified", {})


async def test_an_expired_lease_nobody_took_is_still_ours_and_renewed(database: Database) -> None:
    [a] = await _request(database, "r-2", "coordinator-a")
    await _expire(database, "r-2")
    assert await database.run(leases.renew_leases, "coordinator-a", [("r-2", DEVICE, 1)]) == set()
    row = await _row(database, "r-2")
    [now] = await database.fetch("SELECT now() AS now")
    assert row["lease_until"] > now["now"]
    await database.run(repo.save_step, a, "prechecked", {})  # the outage was only a delay


async def test_a_device_error_with_nul_and_control_characters_is_stored(database: Database) -> None:
    [a] = await _request(database, "r-3", "coordinator-a")
    await database.run(repo.save_step, a, "prechecked", {"types": ["004"], "lock_date": "2026-11-15\x00"})
    message = "The device refused (device 661500000011: \x00\x07bad\x1b[0m) " + "z" * 5000
    rows = await database.run(repo.finish_device, a, "failed", "DEVICE_BUSY", message)
    assert rows is not None
    row = await _row(database, "r-3")
    assert "\x00" not in row["error_message"] and row["error_message"].startswith("The device refused")
    assert len(row["error_message"]) <= 1000


async def test_claims_wait_for_nobody_and_take_each_device_once(database: Database) -> None:
    await _request(database, "r-4", None)
    async with trio.open_nursery() as nursery:
        claimed: list[list[repo.Work]] = []

        async def claim(owner: str) -> None:
            claimed.append(await database.run(leases.claim_work, owner, 10))

        for owner in ("coordinator-a", "coordinator-b"):
            nursery.start_soon(claim, owner)
    taken = [w for works in claimed for w in works]
    assert len(taken) == 1 and taken[0].lease_epoch == 1
