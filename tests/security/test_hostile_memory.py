"""Malformed, oversized and hostile messages published straight to every service queue never stop
a service; valid requests keep working beside them (in-memory bus)."""

from __future__ import annotations

import uuid

from shared.authz.roles import Role
from shared.bus.topology import CLEAR_REQUEST, COMMANDS
from shared.messages.clear import ClearRequest
from shared.messages.codec import encode
from tests.security.conftest import System
from tests.security.hostile import QUEUES, ROUTING_KEYS, messages
from tests.support.fleets import BRANCH


async def test_hostile_messages_on_every_queue_leave_services_serving(system: System) -> None:
    before = system.devices()
    sent = 0
    for queue, name, body, headers in messages():
        message_id = f"hostile-{name}" if sent % 2 else None
        await system.bus.publish(COMMANDS, ROUTING_KEYS[queue], body, message_id=message_id,
                                 reply_to="amq.gen-nowhere" if sent % 3 else None, headers=headers)
        sent += 1
    token = system.keys.issue("ops", Role.OPERATOR, [BRANCH])
    request_id = f"valid-{uuid.uuid4().hex[:8]}"
    request = ClearRequest(request_id=request_id, branch_id=BRANCH, period="2026-10")
    final = await system.send(COMMANDS, CLEAR_REQUEST, encode(request), request_id,
                              {"authorization": f"Bearer {token}"})
    assert final["event"] == "clear.finished" and final["status"] == "succeeded", final
    after = system.devices()
    assert all(len(after[d]["writebacks"]) == len(before[d]["status"]) for d in after)  # only the valid clear
    # consumers of one-way messages dead-letter the unreadable ones; command servers (gateway,
    # backup, authority) answer them with INVALID_REQUEST instead
    dead = {q: system.bus.depth(f"{q}.dead") for q in QUEUES}
    assert all(dead[q] > 0 for q in (QUEUES[0], QUEUES[1], QUEUES[5])), str(dead)
    assert sent == len(QUEUES) * len(messages()) // len(QUEUES)
