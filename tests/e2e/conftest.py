"""The end-to-end suite is one contract on both buses: every system test runs on the in-memory
bus and on RabbitMQ (a fresh vhost each), as the bus layer's own contract suite does (tests/bus).

Tests that need RabbitMQ itself (separate `clearcard serve` processes, TLS links, a plain AMQP
client, dead-letter tools) take no `transport` and are marked `rabbitmq` with their reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from shared.db import Database
from tests.support.system import TRANSPORTS, System, SystemFactory, Transport, start_system


@pytest.fixture(params=[pytest.param(t, marks=[pytest.mark.rabbitmq] if t == "rabbitmq" else [])
                        for t in TRANSPORTS])
def transport(request: pytest.FixtureRequest) -> Transport:
    """The bus the system runs on: each system test runs once per transport."""
    value: Transport = request.param
    return value


@pytest.fixture
async def make_system(tmp_path: Path, database: Database, transport: Transport) -> AsyncIterator[SystemFactory]:
    """Start the whole system on a fleet: `async with make_system(text[, env]) as system: ...`."""

    def start(fleet: str | Path | None = None, env: Mapping[str, str] | None = None,
              ) -> AbstractAsyncContextManager[System]:
        return start_system(tmp_path, database, fleet, env, transport=transport)

    yield start


@pytest.fixture
async def system(make_system: SystemFactory) -> AsyncIterator[System]:
    """The whole system on the two-family fleet (tests/support/fleets.py)."""
    async with make_system() as running:
        yield running
