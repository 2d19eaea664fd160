"""The notify service SIGKILLed after claiming a notification, before it was sent: delivered once.

The mail server first accepts the connection and never greets (the sender waits inside
`send`, its claim taken), the service is killed there, a real SMTP server (aiosmtpd) takes
the port, and the service starts again: the event comes back, the dead sender's claim is taken
over once it is older than the claim timeout, and the email goes out exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio

from shared.authz.identity import IdentifiedBus, ServiceIdentity, ServiceKeys
from shared.bus.rabbitmq import RabbitBus
from shared.bus.topology import EVENTS
from shared.config import Settings
from tests.faults.broker_view import assert_no_dead_letters
from tests.faults.harness import cluster, fault_scenario
from tests.notify.test_notify import TextReceiveStream, free_port
from tests.support.fleets import BRANCH
from tests.support.processes import cli

pytestmark = fault_scenario()

CLAIM_TIMEOUT_S = 3
WARNING = {"event": "device.lock_warning", "request_id": "lock-661500000011", "at": "2026-11-12T01:00:00Z",
           "trace_id": "0" * 32, "device_id": "661500000011", "branch_id": BRANCH, "lock_date": "2026-11-15",
           "days_left": 2, "level": "critical", "last_result": "TIMEOUT"}


@asynccontextmanager
async def silent_mail_server(port: int) -> AsyncIterator[trio.Event]:
    """Accepts connections and never says a word; the event is set at the first connection."""
    connected = trio.Event()
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        connected.set()
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, hold, listeners)
        yield connected
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()


@asynccontextmanager
async def mail_server(port: int) -> AsyncIterator[trio.MemoryReceiveChannel[dict[str, object]]]:
    """aiosmtpd in a child process (tests/notify/smtp_sink.py); each message received, as a dict."""
    send, receive = trio.open_memory_channel[dict[str, object]](100)
    sink = Path(__file__).parents[1] / "notify" / "smtp_sink.py"
    process = await trio.lowlevel.open_process([sys.executable, str(sink), str(port)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    lines = TextReceiveStream(process.stdout)
    try:
        with trio.fail_after(20):
            assert await lines.receive_line() == "ready"
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                while line := await lines.receive_line():
                    send.send_nowait(json.loads(line))

            nursery.start_soon(read)
            yield receive
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def ledger(database_url: str) -> list[dict[str, object]]:
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(database_url)
    try:
        rows = await trio_asyncio.aio_as_trio(conn.fetch)("SELECT state, attempts FROM notifications_sent")
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()
    return [dict(r) for r in rows]


async def test_a_notification_claimed_by_a_killed_sender_is_delivered_once(
        tmp_path: Path, database_url: str) -> None:
    port = free_port()
    overrides = {"CLEARCARD_SMTP": f"127.0.0.1:{port}", "CLEARCARD_NOTIFY_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT_S)}
    async with cluster(tmp_path, database_url, layout={"notify": ("notify",)}, overrides=overrides) as (c, url):
        await cli(c.direct, "notify", "set", "--branch", BRANCH, "--email", "finance@example.com")
        settings = Settings.from_env(c.direct)
        identity = ServiceIdentity(ServiceKeys(settings.identity_dir), "coordinator")  # events come from it
        async with RabbitBus.connect(url, name="fault-test") as raw:
            bus = IdentifiedBus(raw, identity)
            async with silent_mail_server(port) as connected:
                await bus.publish(EVENTS, "device.lock_warning", json.dumps(WARNING).encode(), message_id="warn-1")
                with trio.fail_after(30):
                    await connected.wait()
                await c.kill("notify")  # claimed, not sent
            assert await ledger(database_url) == [{"state": "sending", "attempts": 1}]
            async with mail_server(port) as received:
                await c.start("notify")
                with trio.fail_after(60):
                    email = await received.receive()
                assert email["to"] == ["finance@example.com"] and "2026-11-15" in str(email["subject"])
                with trio.fail_after(30):
                    while True:
                        if await ledger(database_url) == [{"state": "sent", "attempts": 2}]:
                            break
                        await trio.sleep(0.2)  # the ledger is the service's; there is no event to wait on
                # the event is settled: nothing comes back, nothing more is sent
                with pytest.raises(trio.WouldBlock):
                    received.receive_nowait()
            await assert_no_dead_letters(url)
        assert c.exited() == {}, c.logs()
