"""A captured service identity, replayed on another message, onto another queue, or after it
expired, is refused on real RabbitMQ: dead-lettered, audited, and never answered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pika
import pytest
import trio

from clearcard.runtime import start_services
from services.audit.log import search
from shared.authz.identity import ServiceIdentity, ServiceKeys
from shared.bus.api import Delivery
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import AUDIT, AUTHORITY, COMMANDS, DEFAULT
from shared.config import Settings
from shared.db import Database
from tests.support.vhosts import fresh_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


async def rejections(db: Database, n: int) -> list[dict[str, Any]]:
    """The first `n` message.rejected records (the audit service appends asynchronously and
    PostgreSQL offers nothing to wait on: poll, bounded)."""
    with trio.fail_after(30):
        while True:
            rows = [r for r in await search(db) if r["action"] == "message.rejected"]
            if len(rows) >= n:
                return rows
            await trio.sleep(0.05)


async def test_captured_identity_replayed_is_refused_dead_lettered_and_audited(
        tmp_path: Path, database: Database) -> None:
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path / "data"), "CLEARCARD_DATABASE_URL": database.dsn})
    coordinator = ServiceIdentity(ServiceKeys(settings.identity_dir), "coordinator")
    query = json.dumps({"taxpayer_id": "91420100MA4K0001XK", "period": "2026-10",
                        "device_id": "661500000001"}).encode()
    replies: list[Delivery] = []
    async with fresh_vhost() as url, RabbitBus.connect(url, name="identity-test") as bus, \
            trio.open_nursery() as nursery:
        await start_services(nursery, ["audit", "authority-sim"], bus, database, settings)
        reply_queue = await bus.declare_reply_queue()
        answered = trio.Event()

        async def on_reply(delivery: Delivery) -> None:
            replies.append(delivery)
            answered.set()

        await nursery.start(lambda task_status: bus.consume(reply_queue, on_reply, task_status=task_status))

        def send_props(message_id: str) -> dict[str, Any]:
            return {"message_id": message_id, "correlation_id": message_id, "reply_to": reply_queue}

        # what the coordinator sends, and someone on the network captures
        captured = coordinator.sign(COMMANDS, "authority.declaration_status", query, **send_props("q-1"))
        await bus.publish(COMMANDS, "authority.declaration_status", query, headers=captured, **send_props("q-1"))
        with trio.fail_after(30):
            await answered.wait()
        # 1. the header on another message (same id, route and reply queue; another device)
        other = query.replace(b"661500000001", b"661500000002")
        await bus.publish(COMMANDS, "authority.declaration_status", other, headers=captured, **send_props("q-1"))
        # 2. the same message, put onto another queue (the audit queue, straight through the default exchange)
        await bus.publish(DEFAULT, AUDIT.name, query, headers=captured, **send_props("q-1"))
        # 3. a header captured ten minutes ago, replayed now
        old = ServiceIdentity(coordinator.keys, "coordinator", clock=lambda: time.time() - 600)
        stale = old.sign(COMMANDS, "authority.declaration_status", query, **send_props("q-2"))
        await bus.publish(COMMANDS, "authority.declaration_status", query, headers=stale, **send_props("q-2"))
        refused = await rejections(database, 3)
        # each refusal is audited just before its message is rejected to the dead-letter queue
        with trio.fail_after(30):
            while True:  # the broker's queue depth has no event to wait on
                dead = (await trio.to_thread.run_sync(depth, url, AUTHORITY.dead_letter_queue),
                        await trio.to_thread.run_sync(depth, url, AUDIT.dead_letter_queue))
                if dead == (2, 1):
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert [r.correlation_id for r in replies] == ["q-1"]  # only the genuine message was answered
    reasons = sorted(r["detail"]["reason"] for r in refused)
    assert sum("does not match this message" in r for r in reasons) == 2, reasons
    assert sum("expired" in r for r in reasons) == 1, reasons
    assert {r["detail"]["queue"] for r in refused} == {AUTHORITY.name, AUDIT.name}
    assert all(r["detail"]["claimed_service"] == "coordinator" and r["error_code"] == "AUTH_INVALID"
               for r in refused)
    assert dead == (2, 1)
