"""Notifications by email (a real local SMTP server, aiosmtpd, plain and with STARTTLS and login)
and signed webhooks (a local HTTP server), never the same one twice."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from services.notify import store
from services.notify.secrets import SecretVault
from services.notify.senders import SendFailed, SmtpConfig, send_email, verify
from services.notify.service import Notifier, run_notify, smtp_from_env
from shared.bus.api import Delivery
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
async def local_servers(inbox: Inbox, *sink_args: str) -> AsyncIterator[tuple[int, int]]:
    """aiosmtpd in a child process and an HTTP server on a thread, both on free local ports."""
    smtp_port, http_port = free_port(), free_port()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            inbox.put("webhook", {"body": body, "headers": dict(self.headers)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = HTTPServer(("127.0.0.1", http_port), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    process = await trio.lowlevel.open_process(
        [sys.executable, str(Path(__file__).with_name("smtp_sink.py")), str(smtp_port), *sink_args],
        stdout=subprocess.PIPE)
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


Received = tuple[trio.MemoryReceiveChannel[tuple[str, Any]], int, int]


@pytest.fixture
async def received(database: Database) -> AsyncIterator[Received]:
    send, receive = trio.open_memory_channel[tuple[str, Any]](100)
    async with local_servers(Inbox(send, trio.lowlevel.current_trio_token())) as (smtp_port, http_port):
        yield receive, smtp_port, http_port


def finished_event(request_id: str, status: str = "partial") -> dict[str, Any]:
    results: list[dict[str, Any]] = [{"device_id": "539900000004", "outcome": "cleared"}]
    if status != "succeeded":
        results.insert(0, {"device_id": "661500000001", "outcome": "failed",
                           "error": {"code": "COMPARISON_FAILED", "message": "The bureau's comparison failed."}})
    return {"event": "clear.finished", "request_id": request_id, "at": "2026-11-03T01:00:00Z",
            "trace_id": "0" * 32, "status": status, "results": results}


async def add_request(database: Database, request_id: str) -> None:
    await database.execute("INSERT INTO clear_requests (request_id, branch_id, period, mode, subject, trace_id)"
                           " VALUES ($1, $2, '2026-10', 'auto', 'op', $3)", request_id, BRANCH, "0" * 32)


async def take(inbox: trio.MemoryReceiveChannel[tuple[str, Any]], n: int) -> list[tuple[str, Any]]:
    with trio.fail_after(20):
        return [await inbox.receive() for _ in range(n)]


async def test_a_summary_per_request_signed_webhooks_and_escalation_reach_contacts_once(
        database: Database, tmp_path: Path, received: Received) -> None:
    inbox, smtp_port, http_port = received
    hook = f"http://127.0.0.1:{http_port}/hook?token=s3cr3t-in-url"
    vault = SecretVault.open(tmp_path / "keys")
    secret = vault.new_secret()
    assert await database.run(store.set_contacts, BRANCH, [("email", "finance@example.com"), ("webhook", hook)],
                              {hook: vault.seal(secret)}) == [hook]
    for rid in ("req-1", "req-2"):
        await add_request(database, rid)
    smtp = SmtpConfig(port=smtp_port)
    bus = MemoryBus()
    settings = Settings.from_env({"CLEARCARD_DATA_DIR": str(tmp_path)})
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_notify(bus, database, settings, smtp=smtp,
                                                               task_status=task_status))
            body = json.dumps(finished_event("req-1")).encode()
            await bus.publish(EVENTS, "clear.finished", body, message_id="m1")
            got = await take(inbox, 3)  # one summary email; the summary and the failure by webhook
            nursery.cancel_scope.cancel()
    email = next(v for k, v in got if k == "email")
    assert email["to"] == ["finance@example.com"] and "1 cleared, 1 failed" in email["subject"]
    assert "539900000004: cleared" in email["text"] and "COMPARISON_FAILED" in email["text"]
    posts = [v for k, v in got if k == "webhook"]
    for post in posts:  # each POST verifies with the endpoint's secret, over its exact body and timestamp
        headers = {k.lower(): v for k, v in post["headers"].items()}
        assert verify(secret, headers["x-clearcard-timestamp"], post["body"], headers["x-clearcard-signature"])
        assert not verify("whsec_other", headers["x-clearcard-timestamp"], post["body"],
                          headers["x-clearcard-signature"])
        assert not verify(secret, headers["x-clearcard-timestamp"], post["body"] + b" ",
                          headers["x-clearcard-signature"])
    kinds = {json.loads(p["body"])["kind"]: json.loads(p["body"]) for p in posts}
    assert kinds["clear.failed"]["device_id"] == "661500000001"
    assert kinds["clear.failed"]["error"]["code"] == "COMPARISON_FAILED"
    assert kinds["clear.summary"]["counts"] == {"cleared": 1, "failed": 1}
    logged = json.dumps(logs, default=str)
    assert "s3cr3t-in-url" not in logged and "127.0.0.1:" + str(http_port) not in logged
    assert "finance@example.com" not in logged and secret not in logged

    notifier = Notifier(database, smtp, vault)
    await notifier.handle(Delivery(EVENTS, "clear.finished", body, message_id="m2"))  # a replay: nothing again
    await database.run(store.set_summaries, BRANCH, "problems")
    await notifier.handle(Delivery(EVENTS, "clear.finished", json.dumps(finished_event("req-2", "succeeded")).encode()))
    for level, days in (("warning", 5), ("critical", 2)):
        warning = {"event": "device.lock_warning", "request_id": "lock-661500000001", "at": "2026-11-12T01:00:00Z",
                   "trace_id": "0" * 32, "device_id": "661500000001", "branch_id": BRANCH,
                   "lock_date": "2026-11-16", "days_left": days, "level": level, "last_result": "DEVICE_BUSY"}
        for _ in range(2):
            await notifier.handle(Delivery(EVENTS, "device.lock_warning", json.dumps(warning).encode()))
    second = await take(inbox, 4)  # a succeeded request is not summarised under 'problems'
    subjects = sorted(v["subject"] for k, v in second if k == "email")
    assert subjects[0].startswith("[ClearCard] CRITICAL") and subjects[1].startswith("[ClearCard] WARNING")
    critical = next(v for k, v in second if k == "email" and "CRITICAL" in v["subject"])
    assert "second and last warning" in critical["text"]
    with pytest.raises(trio.WouldBlock):
        inbox.receive_nowait()  # nothing more: every notice went out once
    rows = await database.fetch("SELECT dedupe_key FROM notifications_sent")
    assert len(rows) == 7, rows  # summary x2 channels, failure x1, two levels x2 channels


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (cert, key, CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


async def test_the_summary_reaches_an_smtp_server_that_requires_starttls_and_login(
        database: Database, tmp_path: Path) -> None:
    cert, key, ca = tls_files(tmp_path)
    send, inbox = trio.open_memory_channel[tuple[str, Any]](10)
    async with local_servers(Inbox(send, trio.lowlevel.current_trio_token()), str(cert), str(key),
                             "clearcard", "app-password") as (smtp_port, _):
        await database.run(store.set_contacts, BRANCH, [("email", "finance@example.com")])
        await add_request(database, "req-tls")
        smtp = smtp_from_env({"CLEARCARD_SMTP": f"127.0.0.1:{smtp_port}", "CLEARCARD_SMTP_FROM": "cc@example.com",
                              "CLEARCARD_SMTP_USER": "clearcard", "CLEARCARD_SMTP_PASSWORD": "app-password",
                              "CLEARCARD_SMTP_CA_FILE": str(ca)})
        assert smtp.tls == "starttls" and "app-password" not in repr(smtp)
        notifier = Notifier(database, smtp)
        await notifier.handle(Delivery(EVENTS, "clear.finished", json.dumps(finished_event("req-tls")).encode()))
        [(_, email)] = await take(inbox, 1)
        assert email["tls"] is True and email["login"] == "clearcard" and "req-tls" in email["text"]
        wrong = SmtpConfig(host="127.0.0.1", port=smtp_port, tls="starttls", username="clearcard",
                           password="wrong", ca_file=str(ca))
        with pytest.raises(SendFailed) as refused:
            await send_email(wrong, "finance@example.com", "x", "y")
        assert "refused the login" in str(refused.value) and "wrong" not in str(refused.value)
        untrusted = SmtpConfig(host="127.0.0.1", port=smtp_port, tls="starttls", username="clearcard",
                               password="app-password")  # the system CAs do not know the test CA
        with pytest.raises(SendFailed):
            await send_email(untrusted, "finance@example.com", "x", "y")
    with pytest.raises(ValueError, match="needs TLS"):
        SmtpConfig(username="clearcard", password="p", tls="none")
