"""The console's dead-letter routes: admins list, look at and replay dead letters; each use is audited."""

from __future__ import annotations

import json

from services.auth.roles import Role
from shared.bus.api import Delivery
from shared.bus.retry import DEAD_QUEUE, DEAD_REASON, ROUTING_KEY
from shared.bus.topology import AUDIT, DEAD_LETTERS, NOTIFY, topology_for
from tests.console.conftest import Console


async def _audited(console: Console) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []

    async def visit(delivery: Delivery) -> bool:
        record = json.loads(delivery.body)
        if str(record.get("action", "")).startswith("dlq."):
            records.append(record)
            return True
        return False

    await console.bus.drain(AUDIT.name, visit, limit=1000)
    return records


async def test_admins_list_show_and_replay_dead_letters(console: Console) -> None:
    await console.bus.declare(topology_for(NOTIFY, AUDIT))
    for n in range(2):
        await console.bus.publish(DEAD_LETTERS, NOTIFY.name, b'{"event": "clear.finished", "n": %d}' % n,
                                  message_id=f"ev-{n}", headers={
                                      DEAD_REASON: "still failing after 6 h of retries: SMTP down",
                                      DEAD_QUEUE: NOTIFY.name, ROUTING_KEY: "clear.finished",
                                      "authorization": "Bearer do-not-show"})
    async with console.client(Role.OPERATOR) as operator:
        assert (await operator.get("/api/admin/dead-letters")).status_code == 403
    async with console.client() as admin:
        listed = (await admin.get("/api/admin/dead-letters")).json()
        assert {"queue": NOTIFY.name, "dead_letter_queue": f"{NOTIFY.name}.dead", "messages": 2} in listed
        shown = await admin.get("/api/admin/dead-letters/notify", params={"message_id": "ev-1"})
        assert shown.status_code == 200, shown.text
        [letter] = shown.json()
        assert letter["message_id"] == "ev-1" and letter["routing_key"] == "clear.finished"
        assert letter["reason"].startswith("still failing after 6 h") and "do-not-show" not in shown.text
        replayed = await admin.post("/api/admin/dead-letters/clearcard.notify.dead/replay",
                                    json={"message_ids": ["ev-0"]})
        assert replayed.json() == {"queue": NOTIFY.name, "replayed": ["ev-0"]}
        assert console.bus.depth(f"{NOTIFY.name}.dead") == 1 and console.bus.depth(NOTIFY.name) == 1
        audited = await _audited(console)
    assert [r["action"] for r in audited] == ["dlq.list", "dlq.show", "dlq.replay"]
    assert {r["subject"] for r in audited} == {"tester"}
    assert audited[2]["detail"] == {"queue": NOTIFY.name, "message_ids": ["ev-0"]}
