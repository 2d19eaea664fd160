"""A revoked token is refused everywhere at once, on real RabbitMQ: by every console route, by
fleet clears and by cancels (and by clear requests), at the first decision after the revocation
committed (docs/scaling.md: revocations)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from clearcard.direct_audit import DirectAudit
from clearcard.runtime import ALL, identified, start_services
from services.auth.revocation import revoke
from services.console.service import serve_console
from shared.authz import KeyRing, Role
from shared.bus.api import Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from shared.config import Settings
from shared.db import Database
from shared.messages.fleet import CLEAR_CANCEL, FLEET_CLEAR
from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.vhosts import fresh_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def api_routes(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of /api but the login, path parameters filled in."""
    routes = []
    for path, methods in spec["paths"].items():
        if not path.startswith("/api/") or path == "/api/login":
            continue
        filled = "/".join("x" if part.startswith("{") else part for part in path.split("/"))
        routes.extend((method.upper(), filled) for method in methods)
    return routes


async def test_a_revoked_token_is_refused_by_every_route_fleet_clears_and_cancels(
        tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SCHEDULER", "0")
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_DATABASE_URL": database.dsn,
                                  "CLEARCARD_FLEET": str(two_family_fleet(tmp_path / "fleet.toml")),
                                  "CLEARCARD_HTTP": "127.0.0.1:0"})
    keys = KeyRing(settings.keys_dir)
    token = keys.issue("leaver", Role.ADMIN, ["*"])
    auth = {"authorization": f"Bearer {token}"}
    answers: dict[str, dict[str, Any]] = {}
    arrived = trio.Event()
    async with fresh_vhost() as url, RabbitBus.connect(url, name="revocation-test") as bus, \
            trio.open_nursery() as nursery:
        await start_services(nursery, ALL, bus, database, settings)
        base = await nursery.start(partial(serve_console, identified(bus, "console", settings), database, settings))
        events = await bus.declare_reply_queue()
        for pattern in ("fleet.*", "clear.*"):
            await bus.bind(events, EVENTS, pattern)

        async def on_event(delivery: Delivery) -> None:
            nonlocal arrived
            event = json.loads(delivery.body)
            answers[event["request_id"]] = event
            arrived.set()
            arrived = trio.Event()

        await nursery.start(lambda task_status: bus.consume(events, on_event, task_status=task_status))

        async def answer(request_id: str) -> dict[str, Any]:
            with trio.fail_after(30):
                while request_id not in answers:
                    await arrived.wait()
            return answers[request_id]

        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as http:
            assert (await http.get("/api/status")).status_code == 200  # good until revoked
            routes = api_routes((await http.get("/openapi.json")).json())
            await revoke(database, keys, token, DirectAudit(database), actor="admin-1", reason="left the company")
            # no wait: the next decision anywhere reads the revocation
            answered = {route: await http.request(*route, json={}) for route in routes}
        await bus.publish(COMMANDS, FLEET_CLEAR, json.dumps(
            {"fleet_id": "fleet-revoked", "filters": {"branches": ["*"]}}).encode(), message_id="fleet-revoked",
            headers=auth)
        await bus.publish(COMMANDS, CLEAR_CANCEL, json.dumps({"request_id": "some-request"}).encode(),
                          message_id="some-request", headers=auth)
        await bus.publish(COMMANDS, CLEAR_REQUEST, json.dumps(
            {"request_id": "clear-revoked", "branch_id": BRANCH, "period": "2026-10"}).encode(),
            message_id="clear-revoked", headers=auth)
        fleet, cancel, clear = (await answer("fleet-revoked"), await answer("some-request"),
                                await answer("clear-revoked"))
        nursery.cancel_scope.cancel()
    assert len(routes) >= 15
    wrong = {route: r.status_code for route, r in answered.items() if r.status_code != 401}
    assert wrong == {}, wrong
    assert all(r.json()["error"]["code"] == "AUTH_INVALID" and "revoked" in r.json()["error"]["message"]
               for r in answered.values())
    assert fleet["event"] == "fleet.rejected" and fleet["error_code"] == "AUTH_INVALID", fleet
    assert cancel["event"] == "clear.cancelled" and not cancel["accepted"] and "revoked" in cancel["message"], cancel
    assert clear["event"] == "clear.rejected" and clear["error"]["code"] == "AUTH_INVALID", clear
