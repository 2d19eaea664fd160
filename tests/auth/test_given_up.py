"""A clear request dead-lettered in the end is answered with `clear.rejected`, in plain words."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import trio
import trio.testing

from clearcard.runtime import identified
from services.auth.roles import Role
from services.auth.service import run_auth
from services.auth.tokens import KeyRing
from shared.bus.api import BusError, Delivery
from shared.bus.memory import MemoryBus
from shared.bus.retry import DEAD_REASON
from shared.bus.topology import AUDIT, AUTH_REQUESTS, CLEAR_REQUEST, COMMANDS, EVENTS, topology_for
from shared.config import Settings
from shared.db import Database
from shared.events import reject_given_up

pytestmark = pytest.mark.postgres
REQUEST = {"request_id": "erp-0042", "branch_id": "wuhan-hankou", "period": "2026-10"}


async def _events(bus: MemoryBus, nursery: trio.Nursery) -> trio.MemoryReceiveChannel[dict[str, object]]:
    send, receive = trio.open_memory_channel[dict[str, object]](math.inf)
    queue = await bus.declare_reply_queue()
    await bus.bind(queue, EVENTS, "clear.*")

    async def on(delivery: Delivery) -> None:
        send.send_nowait(json.loads(delivery.body))

    await nursery.start(lambda task_status: bus.consume(queue, on, task_status=task_status))
    return receive


async def test_a_request_auth_keeps_failing_on_is_answered_before_it_is_dead_lettered(
        database: Database, tmp_path: Path) -> None:
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    token = KeyRing(settings.keys_dir).issue("erp", Role.REQUESTER, ["wuhan-hankou"])
    await database.execute("DROP TABLE auth_revocations")  # every decision now meets a bug
    bus = MemoryBus()
    await bus.declare(topology_for(AUTH_REQUESTS))
    async with trio.open_nursery() as nursery:
        events = await _events(bus, nursery)
        await nursery.start(lambda task_status: run_auth(identified(bus, "auth", settings), database, settings,
                                                         task_status=task_status))
        await bus.publish(COMMANDS, CLEAR_REQUEST, json.dumps(REQUEST).encode(), message_id="erp-0042",
                          reply_to=None, headers={"authorization": f"Bearer {token}"})
        with trio.fail_after(20):
            rejected = await events.receive()
        while bus.depth(AUTH_REQUESTS.dead_letter_queue) == 0:
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert rejected["event"] == "clear.rejected" and rejected["request_id"] == "erp-0042"
    error = rejected["error"]
    assert isinstance(error, dict) and error["code"] == "INTERNAL"
    assert "Nothing was done on any device" in error["message"] and "clearcard dlq" in error["message"]
    dead: list[Delivery] = []

    async def look(delivery: Delivery) -> bool:
        dead.append(delivery)
        return False

    await bus.drain(AUTH_REQUESTS.dead_letter_queue, look, limit=10)
    assert [d.message_id for d in dead] == ["erp-0042"]
    assert dead[0].headers[DEAD_REASON].startswith("failed 6 times: UndefinedTableError")


async def test_an_outage_that_outlasted_the_retries_is_told_in_plain_words() -> None:
    bus = MemoryBus()
    await bus.declare(topology_for(AUDIT))
    async with trio.open_nursery() as nursery:
        events = await _events(bus, nursery)
        await reject_given_up(bus, "auth", Delivery(COMMANDS, CLEAR_REQUEST, json.dumps(REQUEST).encode(),
                                                    message_id="erp-0042"), BusError("connection refused"))
        # an unreadable body with a readable message id is answered too; one without any is not
        await reject_given_up(bus, "auth", Delivery(COMMANDS, CLEAR_REQUEST, b"\xff", message_id="erp-7"),
                              BusError("x"))
        await reject_given_up(bus, "auth", Delivery(COMMANDS, CLEAR_REQUEST, b"\xff", message_id="bad id!"),
                              BusError("x"))
        await trio.testing.wait_all_tasks_blocked()
        got = [events.receive_nowait() for _ in range(2)]
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()
        nursery.cancel_scope.cancel()
    assert [(e["request_id"], e["error"]["code"]) for e in got] == [  # type: ignore[index]
        ("erp-0042", "TIMEOUT"), ("erp-7", "TIMEOUT")]
    assert "unreachable for about 6 hours" in got[0]["error"]["message"]  # type: ignore[index]
