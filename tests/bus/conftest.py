"""The `bus` fixture: every contract test runs on the in-memory bus and on real RabbitMQ.

Each RabbitMQ test gets a fresh vhost (so the fixed exchange names of topology.py stay as
they are), deleted afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import pytest
import trio

from shared.bus.api import Bus
from shared.bus.memory import MemoryBus
from shared.bus.rabbitmq import RabbitBus
from tests.support.servers import AMQP_URL, missing

HOW_TO_START = "rabbitmq-server -detached (or: service rabbitmq-server start)"


async def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl (needs root or the rabbitmq user) and return its stdout."""
    done = await trio.run_process(["rabbitmqctl", "-q", *args], capture_stdout=True, capture_stderr=True)
    return done.stdout.decode()


async def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 5672)
    except (OSError, trio.TooSlowError):
        return False
    await stream.aclose()
    return True


@asynccontextmanager
async def fresh_vhost() -> AsyncIterator[str]:
    """A fresh RabbitMQ vhost with permissions for guest; deleted afterwards."""
    if shutil.which("rabbitmqctl") is None or not await _reachable(AMQP_URL):
        missing(f"RabbitMQ at {AMQP_URL} (with rabbitmqctl on PATH)", HOW_TO_START)
    name = f"cc-test-{uuid.uuid4().hex[:12]}"
    await rabbitmqctl("add_vhost", name)
    try:
        await rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        with trio.CancelScope(shield=True):
            await rabbitmqctl("delete_vhost", name)


def vhost_url(name: str) -> str:
    return AMQP_URL.rsplit("/", 1)[0] + "/" + quote(name, safe="")


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield MemoryBus()
        return
    async with fresh_vhost() as name, RabbitBus.connect(vhost_url(name), name="contract-test") as rabbit:
        yield rabbit


@pytest.fixture
async def rabbit() -> AsyncIterator[tuple[RabbitBus, str]]:
    """A RabbitBus on a fresh vhost, with the vhost's name (for rabbitmqctl)."""
    async with fresh_vhost() as name, RabbitBus.connect(vhost_url(name), name="contract-test") as bus:
        yield bus, name
