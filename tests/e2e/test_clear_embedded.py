"""One clear through every service on a real PostgreSQL, on each bus (tests/e2e/conftest.py)."""

from __future__ import annotations

import json

import trio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearcard.follow import new_request_id, submit_and_follow
from device_gateway.emulator.admin import show_device
from services.audit.service import verify_chain
from services.backup.service import verify_backup
from shared import telemetry
from shared.authz.roles import Role
from shared.messages.clear import STEPS, ClearRequest
from tests.support.fleets import BRANCH
from tests.support.system import System


async def test_clear_two_families_end_to_end(system: System) -> None:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    try:
        followed = await system.clear()
    finally:
        telemetry.remove_span_processor(processor)
    kinds = [e["event"] for e in followed.events]
    assert kinds[0] == "clear.accepted" and kinds[-1] == "clear.finished"
    final = followed.final
    assert final["status"] == "succeeded", final
    assert {r["outcome"] for r in final["results"]} == {"cleared"}
    # whose clear it was rides on the event: notify needs no lookup in the coordinator's tables
    assert (final["branch_id"], final["period"]) == (BRANCH, "2026-10")
    for device_id in ("661500000001", "539900000004"):
        steps = [e["step"] for e in followed.events
                 if e["event"] == "clear.progress" and e["device_id"] == device_id]
        assert steps == [s.value for s in STEPS]
        state = show_device(system.settings, device_id)
        assert all(v == 2 for v in state["status"].values())
        assert len(state["writebacks"]) == len(state["status"])  # one per type
        assert len(state["reports"]) == len(state["status"])
    # every event of the request carries the request's trace, and every service took part in it
    trace_ids = {e["trace_id"] for e in followed.events}
    assert len(trace_ids) == 1
    trace_id = int(trace_ids.pop(), 16)
    services = {
        str(span.resource.attributes["service.name"])
        for span in exporter.get_finished_spans()
        if span.context is not None and span.context.trace_id == trace_id
    }
    assert {"clearcard-auth", "clearcard-coordinator", "clearcard-backup", "clearcard-audit",
            "clearcard-gateway", "clearcard-authority-sim"} <= services
    # audit chain intact and the backups named by the results verify
    report = await verify_chain(system.db, system.settings)
    assert report.ok and report.count > 0
    for result in final["results"]:
        verified = await verify_backup(system.db, system.settings, result["backup_id"])
        assert verified.ok, verified


async def test_republished_request_repeats_no_work(system: System) -> None:
    first = await system.clear(request_id="same-request")
    again = await system.clear(request_id="same-request")
    assert again.final["event"] == "clear.finished"
    assert json.dumps(again.final["results"]) == json.dumps(first.final["results"])
    assert [e["event"] for e in again.events] == ["clear.finished"]
    state = show_device(system.settings, "661500000001")
    assert len(state["writebacks"]) == 3


async def test_second_clear_of_the_period_is_already_cleared(system: System) -> None:
    await system.clear()
    followed = await system.clear()
    assert followed.final["status"] == "succeeded"
    assert {r["outcome"] for r in followed.final["results"]} == {"already_cleared"}


async def test_unknown_branch_and_device_are_rejected(system: System) -> None:
    token = system.keys.issue("admin", Role.ADMIN, ["*"])
    request = ClearRequest(request_id=new_request_id(), branch_id="nowhere", period="2026-10")
    with trio.fail_after(30):
        followed = await submit_and_follow(system.bus, request, token)
    assert followed.final["event"] == "clear.rejected"
    assert followed.final["error"]["code"] == "UNKNOWN_BRANCH"
    followed = await system.clear(device_ids=["999999999999"])
    assert followed.final["error"]["code"] == "UNKNOWN_DEVICE"


async def test_manual_clear_needs_the_previewed_confirmation(system: System) -> None:
    refused = await system.clear(mode="manual")
    assert refused.final["error"]["code"] == "CONFIRMATION_REQUIRED"
    preview = await system.clear(preview=True)
    assert preview.final["event"] == "clear.preview"
    assert {p["action"] for p in preview.final["plan"]} == {"clear"}
    state = show_device(system.settings, "661500000001")
    assert state["writebacks"] == [] and state["reports"] == []  # a preview changes nothing
    wrong = await system.clear(mode="manual", confirm="cc1-" + "0" * 40)
    assert wrong.final["error"]["code"] == "PLAN_CHANGED"
    done = await system.clear(mode="manual", confirm=preview.final["confirmation"])
    assert done.final["status"] == "succeeded"
