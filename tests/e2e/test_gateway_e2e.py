"""The gateway inside the whole system: concurrent requests, unplugging mid-clear, PIN secrecy."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearcard.follow import Followed
from device_gateway.emulator.admin import plug, show_device, unplug
from device_registry.pins import PinVault
from services.audit.log import verify_chain
from shared import telemetry
from tests.support.fleets import fleet_text, one_device
from tests.support.system import SystemFactory

DEVICE = "661500000001"


async def test_five_concurrent_requests_write_back_once_per_type(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(latency_ms=5))) as system:
        results: list[Followed] = []

        async def one(index: int) -> None:
            results.append(await system.clear(request_id=f"concurrent-{index}", device_ids=[DEVICE]))

        async with trio.open_nursery() as nursery:
            for index in range(5):
                nursery.start_soon(one, index)
        outcomes = sorted(r.final["results"][0]["outcome"] for r in results)
        assert all(r.final["event"] == "clear.finished" for r in results)
        assert outcomes.count("cleared") >= 1
        assert set(outcomes) <= {"cleared", "already_cleared"}, [r.final for r in results]
        state = show_device(system.settings, DEVICE)
        assert sorted(w["invoice_type"] for w in state["writebacks"]) == ["004", "007"]
        assert len({w["package_id"] for w in state["writebacks"]}) == 1
        assert sorted(r["invoice_type"] for r in state["reports"]) == ["004", "007"]
        assert (await verify_chain(system.db, system.settings)).ok


async def test_unplugged_during_a_clear_then_cleared_after_plugging_back(
    make_system: SystemFactory,
) -> None:
    async with make_system(fleet_text(one_device(latency_ms=20, offline_pending=2))) as system:

        async def pull_out_after_backup(exchange: str, routing_key: str, body: bytes) -> None:
            # the coordinator waits for this publish before its next device command
            if routing_key == "clear.progress":
                event = json.loads(body)
                if event["device_id"] == DEVICE and event["step"] == "backed_up":
                    unplug(system.settings, DEVICE)
            return None

        system.bus.hooks.append(pull_out_after_backup)
        failed = await system.clear()
        [result] = failed.final["results"]
        assert result["outcome"] == "failed" and result["error"]["code"] == "DEVICE_OFFLINE", result
        steps = [e["step"] for e in failed.events if e["event"] == "clear.progress"]
        assert steps == ["authorized", "prechecked", "backed_up"]
        state = show_device(system.settings, DEVICE)
        assert not state["plugged"] and state["writebacks"] == [] and state["reports"] == []

        system.bus.hooks.clear()
        plug(system.settings, DEVICE)
        cleared = await system.clear()
        assert cleared.final["status"] == "succeeded", cleared.final
        state = show_device(system.settings, DEVICE)
        assert len(state["writebacks"]) == 2 and state["offline_pending"] == 0
        assert (await verify_chain(system.db, system.settings)).ok


PIN = "73190842"


def _span_texts(exporter: InMemorySpanExporter) -> list[str]:
    texts = []
    for span in exporter.get_finished_spans():
        texts.append(span.name)
        texts.extend(f"{k}={v!s}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{k}={v!s}" for k, v in (event.attributes or {}).items())
    return texts


async def test_the_pin_never_leaves_the_vault(make_system: SystemFactory, capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    fleet = fleet_text(one_device(pin=PIN, registered_pin=PIN),
                       one_device("661500000002", pin="55550000", registered_pin=PIN, pin_tries_left=3))
    messages: list[bytes] = []
    try:
        async with make_system(fleet) as system:

            async def keep(exchange: str, routing_key: str, body: bytes) -> None:
                messages.append(body)
                return None

            system.bus.hooks.append(keep)
            followed = await system.clear()  # one device clears, the other refuses the PIN
            outcomes = {r["device_id"]: r for r in followed.final["results"]}
            assert outcomes[DEVICE]["outcome"] == "cleared"
            assert outcomes["661500000002"]["error"]["code"] == "DEVICE_PIN_INVALID"
            rows: list[Any] = await system.db.run(
                lambda conn: conn.fetch("SELECT e.device_id, e.pin_cipher, s.pin_refused_revision"
                                        " FROM device_enrolments e JOIN device_sightings s USING (device_id)"))
            audit: list[Any] = await system.db.run(lambda conn: conn.fetch("SELECT * FROM audit_log"))
            vault = PinVault.open(system.settings.keys_dir)
    finally:
        telemetry.remove_span_processor(processor)
    captured = capsys.readouterr()
    haystacks = {
        "stdout": captured.out, "stderr": captured.err, "log records": caplog.text,
        "events": json.dumps(followed.events), "bus messages": b"\n".join(messages).decode(),
        "spans": "\n".join(_span_texts(exporter)), "audit log": "\n".join(str(dict(r)) for r in audit),
    }
    assert messages and audit and exporter.get_finished_spans()
    assert "gateway ready" in captured.out + caplog.text  # the logs were captured at all
    for where, text in haystacks.items():
        assert PIN not in text, f"the PIN appears in the {where}"
    for row in rows:  # stored encrypted; the refused one is remembered by its revision only
        cipher = bytes(row["pin_cipher"])
        assert PIN.encode() not in cipher and vault.unseal(cipher, row["device_id"]) == PIN
    assert {r["device_id"]: r["pin_refused_revision"] for r in rows} == {DEVICE: None, "661500000002": 1}
