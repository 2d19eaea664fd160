"""A fresh RabbitMQ vhost per test (or benchmark run), so runs never see each other's queues."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import trio

from tests.support.servers import AMQP_URL, missing


async def rabbitmqctl(*args: str) -> None:
    await trio.run_process(["rabbitmqctl", "-q", *args], capture_stdout=True, capture_stderr=True)


@asynccontextmanager
async def fresh_vhost(amqp_url: str = AMQP_URL, *, prefix: str = "cc-e2e") -> AsyncIterator[str]:
    """An AMQP URL on a fresh vhost of `amqp_url`'s broker (guest may use it), deleted afterwards."""
    parts = urlsplit(amqp_url)
    try:
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 5672)
        await stream.aclose()
    except (OSError, trio.TooSlowError):
        missing(f"RabbitMQ at {amqp_url}", "rabbitmq-server -detached")
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl", "install rabbitmq-server")
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await rabbitmqctl("add_vhost", name)
    try:
        await rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield amqp_url.rsplit("/", 1)[0] + "/" + quote(name, safe="")
    finally:
        with trio.CancelScope(shield=True):
            await rabbitmqctl("delete_vhost", name)
