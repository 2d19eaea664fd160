"""Notifications by email (a real local SMTP server, aiosmtpd) and webhook (a local HTTP server),
never the same one twice."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from services.notify import store
from services.notify.senders import SmtpConfig
from services.notify.service import NOTIFY_QUEUE, Notifier, run_notify
from shared.bus.memory import MemoryBus
from shared.bus.topology import EVENTS
from shared.config import Settings
from shared.db import Database

pytestmark = pytest.mark.postgres
BRANCH = "wuhan-hankou"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """What the local servers received, handed to trio as it arrives."""

    send: trio.MemorySendChannel[tuple[str, Any]]
    token: trio.lowlevel.TrioToken

    def put(self, kind: str, item: Any) -> None:
        self.token.run_sync_soon(self.send.send_nowait, (kind, item))


@asynccontextmanager
async def local_servers(inbox: Inbox) -> AsyncIterator[tuple[int, int]]:
    """aiosmtpd in a child process and an HTTP server on a thread, both on free local ports."""
    smtp_port, http_port = free_port(), free_port()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            inbox.put("webhook", json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = HTTPServer(("127.0.0.1", http_port), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(Path(__file__).with_name("smtp_sink.py")), str(smtp_port)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        async with trio.open_nursery() as nursery:
            lines = TextReceiveStream(process.stdout)
            with trio.fail_after(20):
                first = await lines.receive_line()
            assert first == "ready", first

            async def read() -> None:
                while line := await lines.receive_line():
                    inbox.put("email", json.loads(line))

            nursery.start_soon(read)
            yield smtp_port, http_port
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        http.shutdown()
        http.server_close()


class TextReceiveStream:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def receive_line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


@pytest.fixture
async def received(database: Database) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[tuple[str, Any]], int, int]]:
    send, receive = trio.open_memory_channel[tuple[str, Any]](100)
    async with local_servers(Inbox(send, trio.lowlevel.current_trio_token())) as (smtp_port, http_port):
        yield receive, smtp_port, http_port


def failed_event(request_id: str) -> dict[str, Any]:
    return {"event": "clear.finished", "request_id": request_id, "at": "2026-11-03T01:00:00Z",
            "trace_id": "0" * 32, "status": "partial", "results": [
                {"device_id": "661500000001", "outcome": "failed",
                 "error": {"code": "COMPARISON_FAILED", "message": "The bureau's comparison failed; fix the return."}},
                {"device_id": "539900000004", "outcome": "cleared"}]}


async def test_failures_and_lock_warnings_reach_contacts_once(
    database: Database, tmp_path: Path,
    received: tuple[trio.MemoryReceiveChannel[tuple[str, Any]], int, int],
) -> None:
    inbox, smtp_port, http_port = received
    await database.run(store.set_contacts, BRANCH, [("email", "finance@example.com"),
                                                    ("webhook", f"http://127.0.0.1:{http_port}/hook")])
    await database.execute("INSERT INTO clear_requests (request_id, branch_id, period, mode, subject, trace_id)"
                           " VALUES ('req-1', $1, '2026-10', 'auto', 'op', $2)", BRANCH, "0" * 32)
    smtp = SmtpConfig(port=smtp_port)
    bus = MemoryBus()
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_notify(bus, database, settings, smtp=smtp,
                                                           task_status=task_status))
        body = json.dumps(failed_event("req-1")).encode()
        await bus.publish(EVENTS, "clear.finished", body, message_id="m1")
        with trio.fail_after(20):
            got = [await inbox.receive(), await inbox.receive()]
        kinds = sorted(k for k, _ in got)
        assert kinds == ["email", "webhook"]
        nursery.cancel_scope.cancel()
    # the same event again (a redelivery, a replayed clear.finished): nothing is sent twice
    notifier = Notifier(database, smtp)
    from shared.bus.api import Delivery

    await notifier.handle(Delivery(EVENTS, "clear.finished", body, message_id="m2"))
    warning = {"event": "device.lock_warning", "request_id": "lock-661500000001", "at": "2026-11-12T01:00:00Z",
               "trace_id": "0" * 32, "device_id": "661500000001", "branch_id": BRANCH,
               "lock_date": "2026-11-15", "days_left": 2, "level": "critical", "last_result": "TIMEOUT"}
    for _ in range(2):
        await notifier.handle(Delivery(EVENTS, "device.lock_warning", json.dumps(warning).encode()))
    with trio.fail_after(20):
        second = [await inbox.receive(), await inbox.receive()]
    assert sorted(k for k, _ in second) == ["email", "webhook"]
    webhook = next(v for k, v in second if k == "webhook")
    assert webhook["kind"] == "device.lock_warning" and webhook["level"] == "critical"
    email = next(v for k, v in second if k == "email")
    assert "2026-11-15" in email["subject"] and email["to"] == ["finance@example.com"]
    with pytest.raises(trio.WouldBlock):
        inbox.receive_nowait()  # nothing more: every notice went out once
    rows = await database.fetch("SELECT dedupe_key, state FROM notifications_sent ORDER BY dedupe_key")
    assert len(rows) == 4, rows  # one ledger row per notice and channel (the dedupe keys)
    assert NOTIFY_QUEUE.name == "clearcard.notify"
