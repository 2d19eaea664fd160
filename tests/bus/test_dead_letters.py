"""Dead letters can be looked at and replayed, on both transports (shared/bus/dead_letters.py)."""

from __future__ import annotations

import math

import trio

from shared.bus import dead_letters
from shared.bus.api import Bus, Delivery, Reject
from shared.bus.topology import COMMANDS, QueueSpec, topology_for
from tests.bus.test_contract import collect, next_delivery, quiesce


async def test_dead_letters_are_shown_with_their_reason_and_replayed_to_their_queue(
        bus: Bus, nursery: trio.Nursery) -> None:
    q = QueueSpec("clearcard.test-dlq", ((COMMANDS, "dlq.*"),))
    await bus.declare(topology_for(q))
    healed = trio.Event()
    accepted_send, accepted = trio.open_memory_channel[Delivery](math.inf)

    async def handler(delivery: Delivery) -> None:
        if not healed.is_set():
            raise Reject("cannot be read today")
        accepted_send.send_nowait(delivery)

    await collect(nursery, bus, q.name, before=handler)
    for n in range(3):
        await bus.publish(COMMANDS, f"dlq.op{n}", b'{"n": %d}' % n, message_id=f"d-{n}", correlation_id=f"c-{n}",
                          headers={"authorization": "Bearer secret-token"})
    tools: dead_letters.DeadLetterBus = bus  # type: ignore[assignment]
    with trio.fail_after(10):
        while await tools.queue_depth(q.dead_letter_queue) != 3:
            await quiesce(bus)

    shown = await dead_letters.show(tools, "test-dlq")
    assert [(s.message_id, s.routing_key, s.exchange) for s in shown] == [
        ("d-0", "dlq.op0", COMMANDS), ("d-1", "dlq.op1", COMMANDS), ("d-2", "dlq.op2", COMMANDS)]
    assert all(s.reason == "refused: Reject: cannot be read today" and s.queue == q.name for s in shown)
    assert shown[0].headers["authorization"] == "Bearer (hidden)" and shown[0].body == '{"n": 0}'
    assert "secret-token" not in repr(shown)
    assert await tools.queue_depth(q.dead_letter_queue) == 3  # looking takes nothing away

    healed.set()
    replayed = await dead_letters.replay(tools, q.dead_letter_queue, replayed_by="tester", message_ids={"d-1"})
    assert [r.message_id for r in replayed] == ["d-1"]
    again = await next_delivery(accepted)
    assert (again.message_id, again.routing_key, again.exchange, again.correlation_id) == (
        "d-1", "dlq.op1", COMMANDS, "c-1")
    assert again.headers[dead_letters.REPLAYED_BY] == "tester" and again.attempt.retries == 0
    assert [s.message_id for s in await dead_letters.show(tools, q.name)] == ["d-0", "d-2"]

    rest = await dead_letters.replay(tools, q.name, replayed_by="tester")
    assert sorted(r.message_id or "" for r in rest) == ["d-0", "d-2"]
    assert sorted([(await next_delivery(accepted)).message_id or "" for _ in range(2)]) == ["d-0", "d-2"]
    assert await tools.queue_depth(q.dead_letter_queue) == 0
