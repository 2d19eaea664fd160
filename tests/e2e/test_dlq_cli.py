"""`clearcard dlq list / show / replay` against real RabbitMQ and PostgreSQL, each use audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.authz.identity import HEADER
from shared.bus.api import Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.retry import DEAD_QUEUE, DEAD_REASON, ROUTING_KEY
from shared.bus.topology import AUDIT, AUTH_REQUESTS, DEAD_LETTERS, NOTIFY, topology_for
from tests.support.processes import cli, environment
from tests.support.vhosts import fresh_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def test_operators_list_show_and_replay_dead_letters(tmp_path: Path, database_url: str) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text("", encoding="utf-8")
    async with fresh_vhost() as url, RabbitBus.connect(url, name="dlq-test") as bus:
        env = environment(tmp_path / "data", url, database_url, fleet)
        await cli(env, "db", "migrate")
        await bus.declare(topology_for(AUTH_REQUESTS, NOTIFY, AUDIT))
        await bus.publish(DEAD_LETTERS, AUTH_REQUESTS.name, b'{"request_id": "erp-1"}', message_id="erp-1",
                          headers={DEAD_REASON: "still failing after 6 h of retries (40 tries): BusError",
                                   DEAD_QUEUE: AUTH_REQUESTS.name, ROUTING_KEY: "clear.request",
                                   "authorization": "Bearer secret-token"})

        listed = json.loads((await cli(env, "dlq", "list", "--json")).stdout)
        assert {"queue": AUTH_REQUESTS.name, "dead_letter_queue": AUTH_REQUESTS.dead_letter_queue,
                "messages": 1} in listed
        assert {"queue": NOTIFY.name, "dead_letter_queue": NOTIFY.dead_letter_queue, "messages": 0} in listed

        shown = await cli(env, "dlq", "show", "auth.requests", "--json")
        [letter] = json.loads(shown.stdout)
        assert (letter["message_id"], letter["routing_key"]) == ("erp-1", "clear.request")
        assert letter["reason"].startswith("still failing after 6 h") and b"secret-token" not in shown.stdout

        refused = await cli(env, "dlq", "replay", "auth.requests", check=False)
        assert refused.returncode == 2 and b"--id" in refused.stderr  # nothing replayed by accident
        replayed = json.loads((await cli(env, "dlq", "replay", "clearcard.auth.requests.dead", "--id", "erp-1",
                                         "--json")).stdout)
        assert replayed == {"queue": AUTH_REQUESTS.name, "replayed": ["erp-1"]}
        assert await bus.queue_depth(AUTH_REQUESTS.dead_letter_queue) == 0
        back: list[Delivery] = []

        async def take(delivery: Delivery) -> bool:
            back.append(delivery)
            return True

        await bus.drain(AUTH_REQUESTS.name, take, limit=10)
        assert [(d.message_id, d.routing_key) for d in back] == [("erp-1", "clear.request")]
        assert back[0].headers["x-clearcard-replayed-by"].startswith("local:")
        # a request from outside carries no service identity: it goes back as it came
        assert HEADER not in back[0].headers and "x-clearcard-voucher" not in back[0].headers

        audited: list[dict[str, object]] = []

        async def record(delivery: Delivery) -> bool:
            audited.append(json.loads(delivery.body))
            return True

        await bus.drain(AUDIT.name, record, limit=100)
        assert [r["action"] for r in audited] == ["dlq.list", "dlq.show", "dlq.replay"]
        assert audited[2]["detail"] == {"queue": AUTH_REQUESTS.name, "message_ids": ["erp-1"]}
