"""The same hostile messages on real RabbitMQ, straight into every service queue of separately
running `clearcard serve all`: the process keeps serving and a valid clear still succeeds."""

from __future__ import annotations

import uuid
from pathlib import Path

import pika
import pytest
import trio

from tests.security.hostile import QUEUES, ROUTING_KEYS, messages
from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.plain_amqp import plain_client_clear
from tests.support.processes import cli, environment, serving
from tests.support.vhosts import fresh_vhost

pytestmark = pytest.mark.rabbitmq


def publish_hostile(url: str) -> None:
    """Publish every hostile message to its queue, by queue name and through the commands exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n, (queue, name, body, headers) in enumerate(messages()):
            props = pika.BasicProperties(
                content_type="application/json" if n % 2 else "text/plain", delivery_mode=2,
                message_id=f"hostile-{name}-{n}" if n % 3 else None, headers=headers or None)
            channel.basic_publish("clearcard", ROUTING_KEYS[queue], body, props)
            channel.basic_publish("", queue, body, props)
    finally:
        connection.close()


async def test_hostile_messages_on_rabbitmq(tmp_path: Path, database_url: str) -> None:
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    async with fresh_vhost() as url:
        env = environment(tmp_path / "data", url, database_url, fleet)
        token = (await cli(env, "token", "issue", "--subject", "erp", "--role", "requester",
                           "--branch", BRANCH)).stdout.decode().strip()
        async with serving(env, "all", log=tmp_path / "serve.log") as process:
            await trio.to_thread.run_sync(publish_hostile, url)
            body = {"request_id": f"erp-{uuid.uuid4().hex[:8]}", "branch_id": BRANCH, "period": "2026-10",
                    "mode": "auto"}
            events, _, _ = await trio.to_thread.run_sync(
                plain_client_clear, url, body, token, f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01")
            assert process.poll() is None, "a service stopped"
            dead = await trio.to_thread.run_sync(dead_letters, url)
        assert events[-1]["event"] == "clear.finished" and events[-1]["status"] == "succeeded", events[-1]
        assert all(dead[q] > 0 for q in (QUEUES[0], QUEUES[1], QUEUES[5])), dead


def dead_letters(url: str) -> dict[str, int]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return {q: channel.queue_declare(f"{q}.dead", passive=True).method.message_count for q in QUEUES}
    finally:
        connection.close()
