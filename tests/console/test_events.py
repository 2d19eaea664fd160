"""Submitting over HTTP and following events, against a stand-in for the rest of the system."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import trio

from clearcard.runtime import identified
from shared.authz.roles import Role
from shared.bus.api import Delivery
from shared.bus.topology import CLEAR_REQUEST, COMMANDS, EVENTS
from tests.console.conftest import BRANCH, Console

TRACE = "0af7651916cd43dd8448eb211c80319c"


async def _publish(console: Console, event: dict[str, Any]) -> None:
    body = {"at": "2026-11-03T01:00:00Z", "trace_id": TRACE, **event}
    # stands in for the coordinator, which signs what it publishes
    coordinator = identified(console.bus, "coordinator", console.settings)
    await coordinator.publish(EVENTS, body["event"], json.dumps(body).encode(), message_id=f"{event['event']}-x")


async def _answer_previews(console: Console, seen: list[Delivery], *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Stands in for auth + coordinator: answers every clear request with a preview."""
    queue = await console.bus.declare_reply_queue()
    await console.bus.bind(queue, COMMANDS, CLEAR_REQUEST)

    async def on_request(delivery: Delivery) -> None:
        seen.append(delivery)
        request = json.loads(delivery.body)
        await _publish(console, {"event": "clear.preview", "request_id": request["request_id"],
                                 "plan": [], "confirmation": "cc1-" + "a" * 40})

    await console.bus.consume(queue, on_request, task_status=task_status)


async def test_submit_publishes_with_the_callers_token_and_waits_for_the_answer(console: Console) -> None:
    seen: list[Delivery] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(_answer_previews, console, seen))
        token = console.token(Role.OPERATOR, (BRANCH,))
        async with console.client(role=None) as http:
            answer = await http.post("/api/clears", params={"wait": True}, headers={"authorization": f"Bearer {token}"},
                                     json={"request_id": "web-test-1", "branch_id": BRANCH, "period": "2026-10",
                                           "preview": True})
        nursery.cancel_scope.cancel()
    assert answer.status_code == 202, answer.text
    assert answer.json()["final"]["event"] == "clear.preview"
    [delivery] = seen
    assert delivery.message_id == "web-test-1"
    assert delivery.headers["authorization"] == f"Bearer {token}"
    assert json.loads(delivery.body) == {"request_id": "web-test-1", "branch_id": BRANCH, "device_ids": [],
                                         "period": "2026-10", "invoice_types": [], "mode": "auto", "preview": True}


async def test_wait_gives_up_with_timeout(console: Console) -> None:
    async with console.client(Role.ADMIN) as http:
        answer = await http.post("/api/clears", params={"wait": True, "wait_seconds": 0.2},
                                 json={"branch_id": BRANCH, "period": "2026-10", "preview": True})
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "TIMEOUT"


async def test_event_stream_replays_then_follows_until_the_final_event(console: Console) -> None:
    rid = "req-stream-1"
    await _publish(console, {"event": "clear.accepted", "request_id": rid, "devices": ["661500000001"]})
    received: list[dict[str, Any]] = []
    first = trio.Event()
    async with console.client(Role.ADMIN) as http, trio.open_nursery() as nursery:

        async def read() -> None:
            async with http.stream("GET", f"/api/clears/{rid}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
                        first.set()

        nursery.start_soon(read)
        with trio.fail_after(10):
            await first.wait()
        await _publish(console, {"event": "clear.progress", "request_id": rid, "device_id": "661500000001",
                                 "step": "authorized", "percent": 13})
        await _publish(console, {"event": "clear.progress", "request_id": "someone-else", "device_id": "661500000001",
                                 "step": "authorized", "percent": 13})
        await _publish(console, {"event": "clear.finished", "request_id": rid, "status": "succeeded",
                                 "results": [{"device_id": "661500000001", "outcome": "cleared"}]})
    assert [e["event"] for e in received] == ["clear.accepted", "clear.progress", "clear.finished"]
    async with console.client(Role.VIEWER, ("elsewhere",)) as http:
        # a request of unknown branch is visible only to an every-branch token
        assert (await http.get(f"/api/clears/{rid}")).status_code == 403
