"""Each notification once: claims a dead sender left are taken over, webhooks carry an idempotency key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from services.notify import store
from services.notify.notices import Notice
from services.notify.senders import SmtpConfig
from services.notify.service import Notifier, idempotency_key
from shared.bus.api import RetryLater
from shared.db import Database
from tests.notify.test_notify import free_port

pytestmark = pytest.mark.postgres
CONTACT = store.Contact("wuhan", "webhook", "http://127.0.0.1:1/hook")


async def test_a_claim_is_taken_over_only_once_its_sender_is_presumed_dead(database: Database) -> None:
    assert await database.run(store.claim, "n-1", CONTACT, "subject", 300) is store.Claim.TAKEN
    assert await database.run(store.claim, "n-1", CONTACT, "subject", 300) is store.Claim.BUSY
    assert await database.run(store.claim, "n-1", CONTACT, "subject", 0) is store.Claim.TAKEN  # stale now
    [row] = await database.fetch("SELECT state, attempts FROM notifications_sent WHERE dedupe_key = 'n-1'")
    assert (row["state"], row["attempts"]) == ("sending", 2)
    await database.run(store.sent, "n-1")
    assert await database.run(store.claim, "n-1", CONTACT, "subject", 0) is store.Claim.SENT


@contextmanager
def webhook(statuses: list[int]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook answering `statuses` in turn (then 204); yields its URL and what it got."""
    got: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            got.append({"key": self.headers.get("Idempotency-Key"), "body": body})
            self.send_response(statuses.pop(0) if statuses else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        server.shutdown()
        server.server_close()


async def test_a_refused_webhook_comes_back_later_with_the_same_idempotency_key(database: Database) -> None:
    notice = Notice(key="failed:req-1:661500000011", branch_id="wuhan", subject="Clear failed", text="...",
                    payload={"kind": "clear.failed", "device_id": "661500000011"})
    with webhook([503]) as (url, got):
        await database.run(store.set_contacts, "wuhan", [("webhook", url)])
        notifier = Notifier(database, SmtpConfig(port=free_port()))
        with pytest.raises(RetryLater, match="webhook"):
            await notifier.deliver(notice)  # refused: released, the event comes back later
        assert await database.fetch("SELECT 1 FROM notifications_sent") == []
        await notifier.deliver(notice)
        await notifier.deliver(notice)  # a redelivery: nothing sent twice
    key = idempotency_key(f"{notice.key}:webhook:{url}")
    assert [g["key"] for g in got] == [key, key] and len(key) == 32
    assert got[1]["body"]["kind"] == "clear.failed"
