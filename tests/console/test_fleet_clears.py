"""Fleet clears over HTTP: the coordinator's preview, confirmation bound to it, progress per branch."""

from __future__ import annotations

import json

import trio

from shared.authz.roles import Role
from tests.console.conftest import BRANCH, Console

PERIOD = "2026-10"


async def test_preview_confirm_and_follow_a_fleet_clear(system: Console) -> None:
    async with system.client(Role.OPERATOR, (BRANCH,)) as http:
        body = {"filters": {"branches": ["*"], "families": ["ukey", "tax_control_disk"]}, "period": PERIOD}
        preview = await http.post("/api/fleet/clears", json={**body, "preview": True})
        assert preview.status_code == 200, preview.text
        plan = preview.json()
        assert plan["devices"] == 2 and plan["requests"] == 1 and plan["branches"] == 1
        assert plan["groups"] == [{"branch_id": BRANCH, "period": PERIOD, "devices": 2,
                                   "families": {"ukey": 1, "tax_control_disk": 1}}]
        narrower = await http.post("/api/fleet/clears", json={
            "filters": {"families": ["ukey"]}, "period": PERIOD, "preview": True})
        assert narrower.json()["devices"] == 1 and narrower.json()["confirmation"] != plan["confirmation"]
        unconfirmed = await http.post("/api/fleet/clears", json=body)
        assert unconfirmed.status_code == 409 and unconfirmed.json()["error"]["code"] == "CONFIRMATION_REQUIRED"
        stale = await http.post("/api/fleet/clears", json={**body, "confirm": narrower.json()["confirmation"]})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "PLAN_CHANGED"
        accepted = await http.post("/api/fleet/clears", json={**body, "confirm": plan["confirmation"]})
        assert accepted.status_code == 202, accepted.text
        fleet_id, [request_id] = accepted.json()["fleet_id"], accepted.json()["requests"]
        assert accepted.json()["devices"] == 2
        with trio.fail_after(60):  # the branch request's own event stream ends with clear.finished
            async with http.stream("GET", f"/api/clears/{request_id}/events") as stream:
                last = None
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        last = json.loads(line[6:])
        assert last is not None and last["event"] == "clear.finished" and last["status"] == "succeeded"
        progress = (await http.get(f"/api/fleet/clears/{fleet_id}")).json()
        assert progress["finished"] is True and progress["totals"]["cleared"] == 2 and progress["requests"] == 1
        assert progress["rows"][0]["branch_id"] == BRANCH and progress["rows"][0]["status"] == "finished"
        assert [f["fleet_id"] for f in (await http.get("/api/fleet/clears")).json()] == [fleet_id]
        again = await http.post("/api/fleet/clears", json={
            "filters": {"statuses": ["needs_report", "reported"]}, "period": PERIOD, "preview": True})
        assert again.json()["devices"] == 0  # every type is cleared now
        assert (await http.get("/api/fleet/clears/fleet-nope")).status_code == 404


async def test_scopes_and_roles_of_fleet_clears(system: Console) -> None:
    body = {"filters": {"branches": ["*"]}, "period": PERIOD, "preview": True}
    async with system.client(Role.OPERATOR, ("elsewhere",)) as http:
        assert (await http.post("/api/fleet/clears", json=body)).json()["devices"] == 0
        denied = await http.post("/api/fleet/clears", json={**body, "filters": {"branches": [BRANCH]}})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "PERMISSION_DENIED"
    async with system.client(Role.VIEWER) as http:
        assert (await http.post("/api/fleet/clears", json=body)).status_code == 403
    async with system.client(Role.ADMIN) as http:
        bad = await http.post("/api/fleet/clears", json={**body, "filters": {"families": ["floppy"]}})
        assert bad.status_code == 422
