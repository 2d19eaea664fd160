"""The gateway service on the in-memory bus and real PostgreSQL, driven through RpcClient."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from gateway_helpers import TAXPAYER_A, TAXPAYER_B, device_toml, fleet_toml, sealed_package, settings_for

from device_gateway.drivers.reference import ReferenceDriver
from device_gateway.emulator.admin import plug, show_device, unplug
from device_gateway.service import run_gateway
from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.fleet import FleetError
from shared.messages import device as msg
from shared.messages.device import (
    DeviceInfo,
    PeriodCommand,
    ReportStage,
    ReportStageCommand,
    WritebackCommand,
    WritebackPackage,
    WritebackReply,
)

UKEY, DISK, WRONG_PIN = "661500000001", "661500000002", "661500000003"

FLEET = fleet_toml(
    device_toml(UKEY, offline_pending=2),
    device_toml(DISK, family="tax_control_disk", taxpayer_id=TAXPAYER_B, branch="wuhan-wuchang",
                invoice_types=["004", "026"]),
    device_toml(WRONG_PIN, registered_pin="87654321", pin_tries_left=3),
)


class Client:
    """Typed calls to one gateway, as the coordinator makes them."""

    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc

    async def call(self, op: str, request: Any, reply: type[Any]) -> Any:
        with trio.fail_after(30):
            return await self.rpc.call(COMMANDS, gateway_routing_key("default", op), request, reply)



class _Raw:
    """A request whose encoded body is given as-is (malformed input tests)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def model_dump_json(self, **_: Any) -> str:
        return self.body.decode()


@asynccontextmanager
async def gateway(database: Database, tmp_path: Path, fleet: str | None = FLEET) -> AsyncIterator[Client]:
    bus = MemoryBus()
    settings = settings_for(tmp_path, fleet)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_gateway(bus, database, settings, task_status=task_status))
        async with RpcClient.open(bus, "test") as rpc:
            yield Client(rpc)
        nursery.cancel_scope.cancel()


async def expect_error(code: ErrorCode, call: Any) -> ClearCardError:
    with pytest.raises(ClearCardError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value


async def clear_device(client: Client, device_id: str, taxpayer: str, types: list[str],
                       clock_block: str | None = None) -> msg.WritebackReply:
    cmd = msg.PeriodCommand(device_id=device_id, period="2026-10")
    info = await client.call("precheck", cmd, msg.DeviceInfo)
    assert info.types == dict.fromkeys(types, 0)
    header = await client.call("read_period", cmd, msg.PeriodHeader)
    assert list(header.invoice_counts) == types and min(header.invoice_counts.values()) >= 5
    page = await client.call("read_invoices", msg.InvoicePageCommand(
        device_id=device_id, period="2026-10", invoice_type=types[0]), msg.InvoicePage)
    assert len(page.invoices) == header.invoice_counts[types[0]] and page.next_cursor is None
    await client.call("upload_offline", cmd, msg.OfflineUpload)
    report = await client.call("report", cmd, msg.ReportReply)
    assert [s.invoice_type for s in report.summaries] == types
    challenge = await client.call("challenge", msg.DeviceCommand(device_id=device_id), msg.Challenge)
    package = msg.WritebackPackage.model_validate(sealed_package(
        device_id, taxpayer, period="2026-10", invoice_types=types, challenge=challenge.challenge,
        clock_block=clock_block))
    reply = await client.call("writeback", msg.WritebackCommand(device_id=device_id, package=package),
                              msg.WritebackReply)
    # the same package again (a redelivery): reported as already applied, never applied twice
    again = await client.call("writeback", msg.WritebackCommand(device_id=device_id, package=package),
                              msg.WritebackReply)
    assert again.applied == [] and again.already == types
    return reply


async def test_full_clear_of_a_ukey_and_a_tax_control_disk(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        reply = await clear_device(client, UKEY, TAXPAYER_A, ["004", "007"])
        assert reply.applied == ["004", "007"] and reply.lock_date == "2026-12-15"
        reply = await clear_device(client, DISK, TAXPAYER_B, ["004", "026"],
                                   clock_block="2026-11-03T09:00:30+08:00")
        assert reply.applied == ["004", "026"]

        # a resumed clear (report again after the write-back) changes nothing on the device
        again = await client.call("report", msg.PeriodCommand(device_id=UKEY, period="2026-10"), msg.ReportReply)
        assert len(again.summaries) == 2

    shown = show_device(settings_for(tmp_path, None), UKEY)
    assert [(w["invoice_type"], w["period"]) for w in shown["writebacks"]] == [
        ("004", "2026-10"), ("007", "2026-10")]
    assert len({w["package_id"] for w in shown["writebacks"]}) == 1
    assert [r["invoice_type"] for r in shown["reports"]] == ["004", "007"]
    assert shown["lock_date"] == "2026-12-15" and shown["status"] == {"004": 2, "007": 2}
    assert shown["offline_pending"] == 0

    rows = {r["device_id"]: r for r in await database.fetch("SELECT * FROM devices")}
    assert set(rows) == {UKEY, DISK, WRONG_PIN}
    ukey = rows[UKEY]
    assert json.loads(ukey["type_status"]) == {"004": 2, "007": 2}
    assert ukey["open_period"] == "2026-11" and str(ukey["lock_date"]) == "2026-12-15"
    assert ukey["family"] == "ukey" and ukey["branch_id"] == "wuhan-hankou" and ukey["gateway_id"] == "default"
    assert ukey["pin_tries_left"] == 5 and ukey["online"] and ukey["last_seen"] is not None
    assert "pin_cipher" not in ukey  # the PIN on record is the registry's, encrypted
    cipher = await database.fetch("SELECT pin_cipher FROM device_enrolments WHERE device_id = $1", UKEY)
    assert b"12345678" not in bytes(cipher[0]["pin_cipher"])


async def test_writeback_before_report_and_bad_package(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        challenge = await client.call("challenge", msg.DeviceCommand(device_id=UKEY), msg.Challenge)
        package = msg.WritebackPackage.model_validate(sealed_package(
            UKEY, TAXPAYER_A, period="2026-10", invoice_types=["004"], challenge=challenge.challenge))
        error = await expect_error(ErrorCode.WRITEBACK_REJECTED, client.call(
            "writeback", msg.WritebackCommand(device_id=UKEY, package=package), msg.WritebackReply))
        assert "no summary reported" in error.message
        await expect_error(ErrorCode.OFFLINE_INVOICES_PENDING, client.call(
            "report", msg.PeriodCommand(device_id=UKEY, period="2026-10"), msg.ReportReply))


async def test_wrong_pin_costs_exactly_one_try(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        cmd = msg.PeriodCommand(device_id=WRONG_PIN, period="2026-10")
        first = await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", cmd, msg.DeviceInfo))
        second = await expect_error(ErrorCode.DEVICE_PIN_INVALID, client.call("precheck", cmd, msg.DeviceInfo))
        assert "no try used" in second.message and first.message != second.message
        for message in (first.message, second.message):
            assert "87654321" not in message and "12345678" not in message
        info = await client.call("info", msg.DeviceCommand(device_id=WRONG_PIN), msg.DeviceInfo)
        assert info.pin_tries_left == 2
    assert show_device(settings_for(tmp_path, None), WRONG_PIN)["pin_tries_left"] == 2
    rows = await database.fetch("SELECT pin_tries_left FROM devices WHERE device_id = $1", WRONG_PIN)
    assert rows[0]["pin_tries_left"] == 2


async def test_unplug_then_plug(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        settings = settings_for(tmp_path, None)
        cmd = msg.DeviceCommand(device_id=UKEY)
        await client.call("info", cmd, msg.DeviceInfo)
        unplug(settings, UKEY)
        assert show_device(settings, UKEY)["plugged"] is False
        await expect_error(ErrorCode.DEVICE_OFFLINE, client.call("info", cmd, msg.DeviceInfo))
        rows = await database.fetch("SELECT online FROM devices WHERE device_id = $1", UKEY)
        assert rows[0]["online"] is False
        plug(settings, UKEY)
        info = await client.call("info", cmd, msg.DeviceInfo)
        assert info.device_id == UKEY


async def test_bad_input_is_answered_and_the_gateway_keeps_running(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        for op, body in [("info", b"{}"), ("info", b"not json"), ("report", b'{"device_id": "661500000001"}'),
                         ("nonsense", b'{"device_id": "661500000001"}')]:
            await expect_error(ErrorCode.INVALID_REQUEST, client.call(op, _Raw(body), msg.DeviceInfo))
        await expect_error(ErrorCode.UNKNOWN_DEVICE, client.call(
            "info", msg.DeviceCommand(device_id="999999999999"), msg.DeviceInfo))
        await expect_error(ErrorCode.INVALID_REQUEST, client.call(
            "read_period", msg.PeriodCommand(device_id=UKEY, period="2026-10", invoice_types=["005"]),
            msg.PeriodHeader))
        assert (await client.call("info", msg.DeviceCommand(device_id=UKEY), msg.DeviceInfo)).device_id == UKEY


async def test_bad_fleet_does_not_start(database: Database, tmp_path: Path) -> None:
    bad = fleet_toml(device_toml(UKEY), device_toml(UKEY))
    with pytest.raises(FleetError, match="appears twice"):
        await run_gateway(MemoryBus(), database, settings_for(tmp_path, bad))


async def test_one_device_at_a_time_many_devices_in_parallel(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"6615000001{n:02d}" for n in range(6)]
    fleet = fleet_toml(*(device_toml(i, latency_ms=20) for i in ids))
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    lock = threading.Lock()
    original: Callable[..., Any] = ReferenceDriver._once

    def recording_once(self: ReferenceDriver, command: Any, request: Any) -> Any:
        start = time.monotonic()
        try:
            return original(self, command, request)
        finally:
            with lock:
                spans[self.device_id].append((start, time.monotonic()))

    monkeypatch.setattr(ReferenceDriver, "_once", recording_once)
    async with gateway(database, tmp_path, fleet) as client, trio.open_nursery() as nursery:
        for device_id in ids:
            for _ in range(4):
                nursery.start_soon(client.call, "info", msg.DeviceCommand(device_id=device_id), msg.DeviceInfo)
                nursery.start_soon(client.call, "read_period",
                                   msg.PeriodCommand(device_id=device_id, period="2026-10"), msg.PeriodHeader)
    everything = sorted(s for device in spans.values() for s in device)
    for device_id in ids:
        mine = sorted(spans[device_id])
        assert len(mine) >= 8
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(mine))
    overlapping = any(b_start < a_end for (_, a_end), (b_start, _) in itertools.pairwise(everything))
    assert overlapping, "devices should run in parallel"


async def test_report_stage_uploads_first_then_reports_with_a_challenge(database: Database, tmp_path: Path) -> None:
    """Pending offline invoices stop the stage after the upload; asked again, the device reports
    and gives a challenge, and the write-back answers the device's read-back."""
    async with gateway(database, tmp_path) as client:
        cmd = ReportStageCommand(device_id=UKEY, period="2026-10")
        await client.call("precheck", PeriodCommand(device_id=UKEY, period="2026-10"), DeviceInfo)
        first = await client.call("report_stage", cmd, ReportStage)
        assert len(first.offline) == 2 and first.summaries is None and first.challenge is None
        assert show_device(settings_for(tmp_path, None), UKEY)["reports"] == []
        second = await client.call("report_stage", cmd.model_copy(update={"offline_sent": True}), ReportStage)
        assert second.offline == [] and second.challenge
        assert [s.invoice_type for s in second.summaries or []] == ["004", "007"]
        package = WritebackPackage.model_validate(sealed_package(
            UKEY, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"], challenge=second.challenge))
        reply = await client.call("writeback", WritebackCommand(device_id=UKEY, package=package), WritebackReply)
        assert reply.applied == ["004", "007"]
        assert reply.info is not None and reply.info.types == {"004": 2, "007": 2}
    shown = show_device(settings_for(tmp_path, None), UKEY)
    assert shown["offline_pending"] == 0 and [r["invoice_type"] for r in shown["reports"]] == ["004", "007"]


async def test_report_stage_without_pending_invoices_reports_at_once(database: Database, tmp_path: Path) -> None:
    async with gateway(database, tmp_path) as client:
        stage = await client.call("report_stage", ReportStageCommand(device_id=DISK, period="2026-10"), ReportStage)
        assert stage.offline == [] and stage.challenge and len(stage.summaries or []) == 2
        # a repeat (a caller's retry) answers the stored summaries and replaces the challenge
        again = await client.call("report_stage", ReportStageCommand(device_id=DISK, period="2026-10"), ReportStage)
        assert again.summaries == stage.summaries and again.challenge != stage.challenge
