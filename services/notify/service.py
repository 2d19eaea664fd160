"""The notify service: consumes clear events and tells each branch's contacts, once per notice."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import structlog
import trio

from services.notify import store
from services.notify.notices import Notice, failure_notices, lock_notice
from services.notify.senders import SendFailed, SmtpConfig, post_webhook, send_email
from shared.bus.api import Bus, Delivery, Reject, RetryLater
from shared.bus.middleware import traced
from shared.bus.topology import NOTIFY, topology_for
from shared.config import Settings
from shared.db import Database

SERVICE = "notify"
log = structlog.get_logger("clearcard.notify")
NOTIFY_QUEUE = NOTIFY


def smtp_from_env() -> SmtpConfig:
    """CLEARCARD_SMTP = host:port (default 127.0.0.1:25), CLEARCARD_SMTP_FROM = sender address."""
    host, _, port = (os.environ.get("CLEARCARD_SMTP") or "127.0.0.1:25").rpartition(":")
    return SmtpConfig(host=host or "127.0.0.1", port=int(port or 25),
                      sender=os.environ.get("CLEARCARD_SMTP_FROM") or "clearcard@localhost")


def claim_timeout_from_env() -> float:
    """CLEARCARD_NOTIFY_CLAIM_TIMEOUT: seconds before a claimed, unsent notification is sent again."""
    raw = os.environ.get("CLEARCARD_NOTIFY_CLAIM_TIMEOUT", "").strip()
    return float(raw) if raw else store.CLAIM_TIMEOUT


@dataclass(frozen=True)
class Notifier:
    db: Database
    smtp: SmtpConfig
    claim_timeout: float = store.CLAIM_TIMEOUT

    async def handle(self, delivery: Delivery) -> None:
        """One event; a failed send brings the event back later (sent ones are not repeated)."""
        try:
            event = json.loads(delivery.body)
        except ValueError:
            raise Reject("event is not JSON") from None
        if not isinstance(event, dict):
            raise Reject("event is not a JSON object")
        kind = event.get("event")
        if kind == "clear.finished" and event.get("status") != "succeeded":
            request = await self.db.fetch("SELECT branch_id FROM clear_requests WHERE request_id = $1",
                                          event.get("request_id"))
            if not request:
                return
            notices = failure_notices(event, request[0]["branch_id"])
        elif kind == "device.lock_warning":
            notices = [lock_notice(event)]
        else:
            return
        for notice in notices:
            await self.deliver(notice)

    async def deliver(self, notice: Notice) -> None:
        """Send a notice to every contact of its branch, each once.

        A contact whose notification another sender claimed moments ago (or whose server is
        down) is asked again later: the event comes back (RetryLater) once the others went out.
        """
        later: list[str] = []
        for contact in await self.db.run(store.contacts_for, notice.branch_id):
            key = f"{notice.key}:{contact.kind}:{contact.address}"
            claim = await self.db.run(store.claim, key, contact, notice.subject, self.claim_timeout)
            if claim is store.Claim.SENT:
                continue
            if claim is store.Claim.BUSY:
                later.append(f"{key} is being sent by another sender")
                continue
            try:
                if contact.kind == "email":
                    await send_email(self.smtp, contact.address, notice.subject, notice.text,
                                     message_id=idempotency_key(key))
                else:
                    await post_webhook(contact.address, {**notice.payload, "subject": notice.subject,
                                                         "text": notice.text},
                                       idempotency_key=idempotency_key(key))
            except SendFailed as exc:
                await self.db.run(store.release, key)
                later.append(str(exc))
                continue
            await self.db.run(store.sent, key)
            log.info("notification sent", key=key)
        if later:
            raise RetryLater("; ".join(later)[:500])


def idempotency_key(dedupe_key: str) -> str:
    """The same key for every attempt at one notification to one contact: receivers drop repeats."""
    return hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:32]


async def run_notify(bus: Bus, db: Database, settings: Settings, *, smtp: SmtpConfig | None = None,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Consume clear events and notify branch contacts until cancelled."""
    await bus.declare(topology_for(NOTIFY_QUEUE))
    notifier = Notifier(db, smtp or smtp_from_env(), claim_timeout_from_env())
    await bus.consume(NOTIFY_QUEUE.name, traced(SERVICE, NOTIFY_QUEUE.name, notifier.handle),
                      prefetch=8, task_status=task_status)
