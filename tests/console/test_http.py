"""Contract §6 endpoints, roles on the HTTP API, and a clear driven over HTTP to the end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from services.console.app import create_app
from services.console.context import ConsoleContext
from services.console.events import EventHub
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.bus.api import BusError
from shared.bus.memory import MemoryBus
from shared.config import Settings
from tests.console.conftest import BRANCH, Console

PERIOD = "2026-10"


async def test_health_ready_openapi_and_index(console: Console) -> None:
    async with console.client(role=None) as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        spec = (await http.get("/openapi.json")).json()
        for path in ("/healthz", "/readyz", "/metrics", "/api/status", "/api/clears", "/api/audit", "/api/backups"):
            assert path in spec["paths"], path
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        page = await http.get("/")
        assert page.status_code == 200 and "ClearCard" in page.text
        assert (await http.get("/static/app.js")).status_code == 200


class _DownDatabase:
    async def ping(self) -> bool:
        return False


class _DownBus(MemoryBus):
    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        raise BusError("not connected to RabbitMQ (reconnecting)")


async def test_readyz_is_503_when_broker_or_database_is_down(tmp_path: Any) -> None:
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    ctx = ConsoleContext(bus=_DownBus(), db=_DownDatabase(), settings=settings,  # type: ignore[arg-type]
                         keys=KeyRing(settings.keys_dir), hub=EventHub())
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"] == {"database": "unreachable", "broker": "unreachable"}
        assert (await http.get("/healthz")).status_code == 200


async def test_tokens_and_roles_are_enforced(keepers: Console) -> None:
    console = keepers  # the audit and backup services answer the log and backup reads
    async with console.client(role=None) as http:
        missing = await http.get("/api/status")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "AUTH_REQUIRED"
        forged = await http.get("/api/status", headers={"authorization": "Bearer not.a.token"})
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "AUTH_INVALID"
        other_keys = KeyRing(console.settings.data_dir / "elsewhere").issue("x", Role.ADMIN, ["*"])
        assert (await http.get("/api/status", headers={"authorization": f"Bearer {other_keys}"})).status_code == 401
    clear = {"branch_id": BRANCH, "period": PERIOD, "preview": True}
    async with console.client(Role.VIEWER) as http:
        assert (await http.get("/api/status")).status_code == 200
        assert (await http.get("/api/me")).json()["can"] == ["status.read", "clear.follow"]
        assert (await http.get("/api/audit")).json()["error"]["code"] == "PERMISSION_DENIED"
        assert (await http.get("/api/backups")).status_code == 403
        assert (await http.post("/api/clears", json=clear)).status_code == 403
        assert (await http.post("/api/tokens", json={"subject": "s", "role": "admin", "branches": ["*"]})
                ).status_code == 403
    async with console.client(Role.AUDITOR) as http:
        assert (await http.get("/api/audit")).status_code == 200
        assert (await http.get("/api/audit/verify")).json()["ok"] is True
        assert (await http.get("/api/status")).status_code == 403
        assert (await http.get("/api/backups")).status_code == 403
    async with console.client(Role.REQUESTER, (BRANCH,)) as http:
        assert (await http.get("/api/status")).status_code == 403
        manual = await http.post("/api/clears", json={**clear, "preview": False, "mode": "manual", "confirm": "x"})
        assert manual.status_code == 403
    async with console.client(Role.OPERATOR, ("elsewhere",)) as http:
        assert (await http.get("/api/status", params={"branch": BRANCH})).status_code == 403
        assert (await http.post("/api/clears", json=clear)).json()["error"]["code"] == "PERMISSION_DENIED"
        assert (await http.get("/api/backups")).json() == []
    async with console.client(Role.ADMIN) as http:
        issued = await http.post("/api/tokens", json={"subject": "svc", "role": "viewer", "branches": [BRANCH]})
        token = issued.json()["token"]
        me = await http.get("/api/me", headers={"authorization": f"Bearer {token}"})
        assert me.json()["role"] == "viewer" and me.json()["branches"] == [BRANCH]
        bad = await http.post("/api/clears", json={"branch_id": BRANCH, "period": "2026-13"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_REQUEST"


async def _events(http: httpx.AsyncClient, request_id: str) -> list[dict[str, Any]]:
    events = []
    with trio.fail_after(60):
        async with http.stream("GET", f"/api/clears/{request_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
    return events


async def test_manual_clear_over_http_with_live_events_timeline_and_metrics(system: Console) -> None:
    async with system.client(Role.OPERATOR, (BRANCH,)) as http:
        assert {d["device_id"] for d in (await http.get("/api/status")).json()} == {"661500000001", "539900000004"}
        fleet = (await http.get("/api/fleet")).json()
        assert [b["branch_id"] for b in fleet["branches"]] == [BRANCH]
        assert {d["device_id"] for d in fleet["devices"]} == {"661500000001", "539900000004"}
        assert all(d["lock_date"] and d["risk"] in {"red", "amber", "green"} for d in fleet["devices"])
        refused = await http.post("/api/clears", params={"wait": True},
                                  json={"branch_id": BRANCH, "period": PERIOD, "mode": "manual"})
        assert refused.json()["final"]["error"]["code"] == "CONFIRMATION_REQUIRED"
        preview = await http.post("/api/clears", params={"wait": True},
                                  json={"branch_id": BRANCH, "period": PERIOD, "preview": True})
        final = preview.json()["final"]
        assert final["event"] == "clear.preview" and {p["action"] for p in final["plan"]} == {"clear"}
        submitted = await http.post("/api/clears", json={"branch_id": BRANCH, "period": PERIOD, "mode": "manual",
                                                         "confirm": final["confirmation"]})
        assert submitted.status_code == 202
        request_id = submitted.json()["request_id"]
        events = await _events(http, request_id)
        assert events[0]["event"] == "clear.accepted" and events[-1]["event"] == "clear.finished"
        assert events[-1]["status"] == "succeeded"
        again = await _events(http, request_id)  # a finished request replays at once
        assert again[-1] == events[-1]
        timeline = (await http.get(f"/api/clears/{request_id}/timeline")).json()
        for device in timeline["devices"]:
            steps = [s["step"] for s in device["steps"]]
            # the order the audit log holds (step records with their time), ending with the outcome
            assert [s for s in ("backed_up", "reported", "written_back", "verified") if s in steps] == [
                "backed_up", "reported", "written_back", "verified"], steps
            assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in device["steps"])
        after = (await http.get("/api/status")).json()
        assert all(d["filing"] in {"filed", "not_filed", "unknown"} and
                   d["comparison"] in {"pass", "fail", "pending", "unknown"} for d in after)
        # cleared: the open period is now November, not closed yet, so not due at the bureau
        assert {(d["open_period"], d["filing"], d["bureau"]["due"]) for d in after} == {("2026-11", "not_filed", False)}
        assert (await http.get("/api/status", params={"filing": "filed"})).json() == []
        assert len((await http.get("/api/status", params={"filing": "not_filed"})).json()) == 2
        assert (await http.get("/api/status", params={"comparison": "maybe"})).status_code == 422
        detail = (await http.get("/api/devices/661500000001")).json()
        assert detail["types"] == {"004": "cleared", "007": "cleared", "026": "cleared"}
        assert detail["monitoring"]["available"] is True and detail["monitoring"]["lock_date"] == detail["lock_date"]
        assert detail["history"][0]["request_id"] == request_id and detail["history"][0]["outcome"] == "cleared"
        backups = (await http.get("/api/backups")).json()
        assert {b["device_id"] for b in backups} == {"661500000001", "539900000004"}
        verified = await http.post(f"/api/backups/{backups[0]['backup_id']}/verify")
        assert verified.json()["ok"] is True
        assert (await http.get("/api/audit")).status_code == 403
    async with system.client(Role.AUDITOR) as http:
        records = (await http.get("/api/audit", params={"request_id": request_id})).json()
        assert {"clear.accepted", "clear.finished"} <= {r["action"] for r in records}
        lines = (await http.get("/api/audit/export")).text.splitlines()
        assert len(lines) >= len(records)
    async with system.client(role=None) as http:
        text = (await http.get("/metrics")).text
    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for family in text_string_to_metric_families(text) for m in family.samples}
    # counters are this test process's totals (every test clear counts): at least this clear's two
    assert samples[("clearcard_device_clears_total", (("error_code", ""), ("outcome", "cleared")))] >= 2
    for step in ("prechecked", "backed_up", "offline_uploaded", "reported", "declaration_checked",
                 "written_back", "verified"):
        assert samples[("clearcard_step_duration_seconds_count", (("step", step),))] >= 2
    assert any(name == "clearcard_gateway_command_duration_seconds_count" and dict(labels)["op"] == "writeback"
               for name, labels in samples)
    assert "clearcard_devices{" in text and 'clearcard_queue_depth{queue="clearcard.audit"}' in text


async def test_digital_invoice_confirmation_beside_devices(system: Console) -> None:
    taxpayer = "91420100MA4K0002XL"
    async with system.client(Role.ADMIN) as http:
        published = await http.post("/api/digital/simulate", json={
            "taxpayer_id": taxpayer, "name": "Hankou Digital Ltd", "branch_id": BRANCH, "periods": [PERIOD]})
        assert published.status_code == 200, published.text
        month = published.json()[0]
        assert month["status"] == "pending" and month["blue_count"] > 0 and month["deadline"] == "2026-11-15"
    async with system.client(Role.VIEWER, (BRANCH,)) as http:
        branch = (await http.get("/api/fleet")).json()["branches"][0]
        assert [c["taxpayer_id"] for c in branch["digital"]] == [taxpayer]
        assert (await http.post(f"/api/digital/{taxpayer}/{PERIOD}/confirm")).status_code == 403
    async with system.client(Role.OPERATOR, (BRANCH,)) as http:
        confirmed = (await http.post(f"/api/digital/{taxpayer}/{PERIOD}/confirm")).json()
        assert confirmed["status"] == "confirmed" and confirmed["blue_amount"] == month["blue_amount"]
        listed = (await http.get("/api/digital", params={"period": PERIOD})).json()
        assert listed[0]["status"] == "confirmed" and listed[0]["days_left"] is None
