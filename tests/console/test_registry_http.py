"""The device registry over HTTP (admins): list, import all or none, export, set a PIN, retire; audited."""

from __future__ import annotations

from typing import Any

import trio

from shared.authz.roles import Role
from tests.console.conftest import BRANCH, Console

UKEY, DISK, NEW = "661500000001", "539900000004", "661500000077"
TAXPAYER = "91420100MA4K0001XK"
HEADER = "device_id,family,taxpayer_id,branch,machine_no\n"


async def audited(http: Any, device_id: str, action: str) -> dict[str, Any]:
    """The audit record once the audit service stored it (polled: the HTTP answer comes first)."""
    with trio.fail_after(10):
        while True:
            records = (await http.get("/api/audit", params={"device_id": device_id})).json()
            found = [r for r in records if r["action"] == action]
            if found:
                return found[-1]
            await trio.sleep(0.05)  # polling the audit log: there is no event to wait on


async def test_registry_routes_for_admins(system: Console) -> None:
    async with system.client(Role.OPERATOR, (BRANCH,)) as http:
        assert (await http.get("/api/registry/devices")).status_code == 403
    async with system.client(role=None) as http:
        assert (await http.get("/api/registry/devices")).status_code == 401
    async with system.client(Role.ADMIN) as http:
        page = (await http.get("/api/registry/devices")).json()
        assert {d["device_id"]: d["enrolled"] for d in page["devices"]} == {UKEY: True, DISK: True}
        assert page["next"] is None

        bad = HEADER + f"{NEW},ukey,{TAXPAYER},{BRANCH},0\n{NEW},ukey,{TAXPAYER},{BRANCH},1\nx,ukey,{TAXPAYER},b,0\n"
        refused = await http.post("/api/registry/import", content=bad, headers={"content-type": "text/csv"})
        assert refused.status_code == 400
        body = refused.json()
        assert body["error"]["code"] == "INVALID_REQUEST" and body["bad_rows"] == 2
        assert [e["line"] for e in body["errors"]] == [3, 4]
        assert len((await http.get("/api/registry/devices")).json()["devices"]) == 2  # nothing imported

        good = HEADER + f"{NEW},ukey,{TAXPAYER},{BRANCH},3\n{UKEY},ukey,{TAXPAYER},{BRANCH},0\n"
        counts = (await http.post("/api/registry/import", content=good,
                                  headers={"content-type": "text/csv", "x-file-name": "new.csv"})).json()
        assert counts == {"enrolled": 1, "updated": 0, "reinstated": 0, "unchanged": 1}
        assert (await http.put(f"/api/registry/devices/{NEW}/pin", json={"pin": "24681357"})).json() == {
            "device_id": NEW, "pin_revision": 1}
        bad_pin = await http.put(f"/api/registry/devices/{NEW}/pin", json={"pin": "2468 1357"})
        assert bad_pin.status_code == 400 and bad_pin.json()["error"]["code"] == "INVALID_REQUEST"

        exported = await http.get("/api/registry/export", params={"branch": BRANCH})
        assert exported.headers["content-type"].startswith("text/csv")
        lines = exported.text.splitlines()
        assert lines[0] == HEADER.strip() and sorted(line[:12] for line in lines[1:]) == sorted([UKEY, DISK, NEW])
        assert "24681357" not in exported.text and "12345678" not in exported.text

        retired = await http.post(f"/api/registry/devices/{DISK}/retire")
        assert retired.json() == {"device_id": DISK, "retired": True, "changed": True}
        again = await http.post(f"/api/registry/devices/{DISK}/retire")
        assert again.json()["changed"] is False
        unknown = await http.post("/api/registry/devices/661500009999/retire")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "UNKNOWN_DEVICE"
        gone = await http.get(f"/api/devices/{DISK}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "UNKNOWN_DEVICE"
        status = (await http.get("/api/status")).json()
        assert {d["device_id"] for d in status["devices"]} == {UKEY, NEW}
        listed = {d["device_id"]: d for d in (await http.get("/api/registry/devices")).json()["devices"]}
        assert listed[DISK]["retired"] is True and listed[NEW]["pin_on_record"] is True

        assert (await audited(http, DISK, "device.retired"))["subject"] == "tester"
        pin_record = await audited(http, NEW, "device.pin_recorded")
        assert "24681357" not in str(pin_record)
        assert (await audited(http, NEW, "device.enrolled"))["detail"] == {"source": "console"}

        spec = (await http.get("/openapi.json")).json()
        retire_doc = spec["paths"]["/api/registry/devices/{device_id}/retire"]["post"]["responses"]
        assert {"200", "401", "403", "404", "409"} <= set(retire_doc)
        import_doc = spec["paths"]["/api/registry/import"]["post"]
        assert "text/csv" in import_doc["requestBody"]["content"] and {"400", "413"} <= set(import_doc["responses"])


async def test_a_branch_admin_sees_and_changes_only_their_branch(system: Console) -> None:
    async with system.client(Role.ADMIN, ("beijing",)) as http:
        assert (await http.get("/api/registry/devices")).json()["devices"] == []
        denied = await http.post(f"/api/registry/devices/{UKEY}/retire")
        assert denied.status_code == 403
        refused = await http.post("/api/registry/import", content=HEADER + f"{NEW},ukey,{TAXPAYER},{BRANCH},0\n",
                                  headers={"content-type": "text/csv"})
        assert refused.status_code == 400 and "not one of the branches you administer" in refused.text
        assert (await http.get("/api/registry/devices", params={"branch": BRANCH})).status_code == 403
