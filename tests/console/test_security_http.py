"""The console's own rules: TOTP for administration, tokens never worth more than their issuer's,
branch scopes on the audit log and backups, restores confined to the restore root, security
headers, and scrapes that cost no query each."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import trio

from clearcard.runtime import identified
from services.audit.log import search
from shared import audit
from shared.authz import Role
from tests.console.conftest import BRANCH, Console

PERIOD = "2026-10"


def person(console: Console, role: Role, *, totp: bool, branches: tuple[str, ...] = ("*",),
           subject: str = "zhang.admin") -> dict[str, str]:
    """A person's token as `/api/login` signs it: with the second factor only after a TOTP code."""
    token = console.keys.issue(subject, role, list(branches), 900, kind="person",
                               amr=["pwd", "otp"] if totp else ["pwd"])
    return {"authorization": f"Bearer {token}"}


async def audited(console: Console, action: str, n: int) -> list[dict[str, Any]]:
    """The records of `action` once the audit service stored `n` (it appends asynchronously and
    PostgreSQL offers nothing to wait on: poll, bounded)."""
    with trio.fail_after(20):
        while True:
            rows = [r for r in await search(console.db) if r["action"] == action]
            if len(rows) >= n:
                return rows
            await trio.sleep(0.02)


async def test_administration_needs_a_totp_login(console: Console) -> None:
    grant = {"subject": "erp", "role": "requester", "branches": [BRANCH], "kind": "service", "ttl": 3600}
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as http:
        plain = person(console, Role.ADMIN, totp=False)
        for method, path, body in (("POST", "/api/tokens", grant),
                                   ("POST", "/api/backups/x/restore", {"to": "a"}),
                                   ("POST", "/api/emulator/661500000001/plug", None)):
            refused = await http.request(method, path, json=body, headers=plain)
            assert refused.status_code == 403, (path, refused.text)
            assert "TOTP" in refused.json()["error"]["message"]
        assert (await http.post("/api/tokens", json=grant, headers=person(console, Role.ADMIN, totp=True))
                ).status_code == 200
        # a service account never administers, whatever it shows
        service = console.keys.issue("svc", Role.AUDITOR, ["*"], kind="service")
        assert (await http.post("/api/tokens", json=grant, headers={"authorization": f"Bearer {service}"})
                ).status_code == 403


async def test_a_token_minted_over_http_carries_no_more_than_its_issuer_and_is_audited(system: Console) -> None:
    admin = person(system, Role.ADMIN, totp=True, branches=(BRANCH, "wuhan-wuchang"))
    async with httpx.AsyncClient(base_url=system.base_url, headers=admin, timeout=30) as http:
        wider = await http.post("/api/tokens", json={"subject": "erp", "role": "requester", "branches": ["*"]})
        assert wider.status_code == 403 and "branches its issuer covers" in wider.json()["error"]["message"]
        other = await http.post("/api/tokens", json={"subject": "erp", "role": "requester", "branches": ["beijing"]})
        assert other.status_code == 403
        long_person = await http.post("/api/tokens", json={"subject": "li.wei", "role": "operator", "kind": "person",
                                                           "branches": [BRANCH], "ttl": 9 * 3600})
        assert long_person.status_code == 409 and "28800" in long_person.json()["error"]["message"]
        too_long = await http.post("/api/tokens", json={"subject": "erp", "role": "requester", "branches": [BRANCH],
                                                        "ttl": 8 * 24 * 3600})
        assert too_long.status_code == 422
        as_admin = await http.post("/api/tokens", json={"subject": "erp", "role": "admin", "branches": [BRANCH]})
        assert as_admin.status_code == 409  # a service never holds admin
        issued = await http.post("/api/tokens", json={"subject": "li.wei", "role": "operator", "kind": "person",
                                                      "branches": [BRANCH], "ttl": 8 * 3600})
        assert issued.status_code == 200, issued.text
        minted = issued.json()["token"]
    who = system.keys.verify(minted)
    assert (who.kind, who.mfa, who.issued_by, who.branches) == ("person", False, "zhang.admin", (BRANCH,))
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30,
                                 headers={"authorization": f"Bearer {minted}"}) as http:
        # no second factor was handed out: a manual clear needs the person's own TOTP login
        manual = await http.post("/api/clears", json={"branch_id": BRANCH, "period": PERIOD, "mode": "manual",
                                                      "confirm": "x"})
        assert manual.status_code == 403 and "TOTP" in manual.json()["error"]["message"]
        assert (await http.get("/api/status")).status_code == 200
    [record] = await audited(system, "auth.token_issued", 1)
    assert (record["service"], record["subject"]) == ("console", "zhang.admin")
    assert record["detail"]["token_id"] == who.token_id and record["detail"]["role"] == "operator"
    assert record["detail"]["kind"] == "person" and record["detail"]["branches"] == [BRANCH]


async def test_a_branch_scoped_auditor_reads_only_its_branches_records(system: Console) -> None:
    coordinator = identified(system.bus, "coordinator", system.settings)
    for n, (branch, device) in enumerate([(BRANCH, None), ("beijing-haidian", None), (None, "661500000001"),
                                          (None, "110000000099"), (None, None)]):
        await audit.record(coordinator, service="coordinator", subject="ops", action="test.scoped",
                           record_id=f"scoped-{n}", branch_id=branch, device_id=device)
    await audited(system, "test.scoped", 5)
    async with system.client(Role.AUDITOR, (BRANCH,)) as http:
        seen = [r["record_id"] for r in (await http.get("/api/audit")).json() if r["action"] == "test.scoped"]
        exported = [line for line in (await http.get("/api/audit/export")).text.splitlines() if "test.scoped" in line]
        assert (await http.get("/api/audit", params={"branch_id": "beijing-haidian"})).status_code == 403
        assert (await http.get("/api/audit/verify")).status_code == 403  # the whole chain spans every branch
        assert (await http.get("/api/backups")).status_code == 403  # auditors read the log, not backups
    assert seen == ["scoped-0", "scoped-2"]  # its branch, and a device of its branch
    assert len(exported) == 2
    async with system.client(Role.AUDITOR) as http:
        assert len([r for r in (await http.get("/api/audit")).json() if r["action"] == "test.scoped"]) == 5


async def _backup_of_a_clear(system: Console) -> str:
    async with system.client(Role.OPERATOR, (BRANCH,)) as http:
        done = await http.post("/api/clears", params={"wait": True, "wait_seconds": 120},
                               json={"branch_id": BRANCH, "period": PERIOD})
        assert done.json()["final"]["status"] == "succeeded", done.text
        backups = (await http.get("/api/backups")).json()
    async with system.client(Role.OPERATOR, ("elsewhere",)) as http:
        assert (await http.get("/api/backups")).json() == []  # another branch's backups stay unseen
        # as if it did not exist
        assert (await http.post(f"/api/backups/{backups[0]['backup_id']}/verify")).status_code == 404
    return str(backups[0]["backup_id"])


async def test_restores_stay_under_the_restore_root_and_are_private(system: Console, tmp_path: Path) -> None:
    backup_id = await _backup_of_a_clear(system)
    root = system.settings.restore_root
    outside = tmp_path / "outside"
    root.mkdir(parents=True, exist_ok=True)
    (root / "link").symlink_to(outside, target_is_directory=True)
    async with system.client(Role.ADMIN) as http:
        for where in ("../outside", str(outside), "/etc/clearcard", "link/below", ".", ""):
            refused = await http.post(f"/api/backups/{backup_id}/restore", json={"to": where})
            assert refused.status_code in (400, 422), (where, refused.text)
        assert not outside.exists()
        done = await http.post(f"/api/backups/{backup_id}/restore", json={"to": "case-2026-10"})
        assert done.status_code == 200, done.text
    target = Path(done.json()["restored_to"])
    assert target == (root / "case-2026-10").resolve()
    modes = {name: stat.S_IMODE(os.stat(target / name).st_mode) for name in os.listdir(target)}
    assert modes and set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


async def test_security_headers_on_every_answer(console: Console) -> None:
    async with console.client(role=None) as http:
        for path in ("/", "/healthz", "/api/status", "/static/app.js", "/openapi.json"):
            headers = (await http.get(path)).headers
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert "script-src 'self';" in headers["content-security-policy"], path
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            assert "strict-transport-security" not in headers  # plain HTTP here; HTTPS adds it


async def test_readiness_probes_reuse_one_reading(console: Console, monkeypatch: Any) -> None:
    """Probes at once, and again and again: one database ping and broker publish per interval
    (/metrics has its own cache: services/console/metrics_view.py)."""
    from services.console import routes_ops

    checks = 0
    real = routes_ops._checks

    async def counted(ctx: Any) -> dict[str, bool]:
        nonlocal checks
        checks += 1
        return await real(ctx)

    monkeypatch.setattr(routes_ops, "_checks", counted)
    async with console.client(role=None) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(http.get, "/readyz")
        for _ in range(5):
            assert (await http.get("/readyz")).status_code == 200
    assert checks == 1


async def test_emulated_devices_are_shown_and_plugged_by_their_gateway(system: Console) -> None:
    admin = person(system, Role.ADMIN, totp=True)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=30) as http:
        shown = await http.get("/api/emulator/661500000001", headers=admin)
        assert shown.status_code == 200, shown.text
        assert shown.json()["branch"] == BRANCH and shown.json()["plugged"] is True
        unplugged = await http.post("/api/emulator/661500000001/unplug", headers=admin)
        assert unplugged.json() == {"device_id": "661500000001", "done": "unplug"}
        assert (await http.get("/api/emulator/661500000001", headers=admin)).json()["plugged"] is False
        assert (await http.post("/api/emulator/661500000001/plug", headers=admin)).status_code == 200
        assert (await http.get("/api/emulator/661500000001", headers=admin)).json()["plugged"] is True
        other = person(system, Role.OPERATOR, totp=False, branches=("elsewhere",), subject="li.ops")
        assert (await http.get("/api/emulator/661500000001", headers=other)).status_code == 403
        missing = await http.get("/api/emulator/110000000099", headers=admin)
        assert missing.json()["error"]["code"] == "UNKNOWN_DEVICE"
