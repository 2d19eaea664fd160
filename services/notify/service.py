"""The notify service: consumes clear events and tells each branch's contacts, once per notice."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from services.notify import store
from services.notify.notices import Notice, abandoned_notice, failure_notices, lock_notice, summary_notice
from services.notify.secrets import SecretVault
from services.notify.senders import SendFailed, SmtpConfig, endpoint_label, post_webhook, send_email
from shared import metrics
from shared.bus.api import Bus, Delivery, Reject, RetryLater
from shared.bus.middleware import traced
from shared.bus.topology import NOTIFY, topology_for
from shared.config import Settings
from shared.db import Database

SERVICE = "notify"
log = structlog.get_logger("clearcard.notify")
NOTIFY_QUEUE = NOTIFY  # named in shared/bus/topology.py with every other queue


def smtp_from_env(environ: Mapping[str, str] | None = None) -> SmtpConfig:
    """CLEARCARD_SMTP (host:port), _FROM, _TLS (none|starttls|tls), _USER, _PASSWORD(_FILE), _CA_FILE."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        return env.get(f"CLEARCARD_SMTP{name}", "").strip() or None

    host, _, port = (get("") or "127.0.0.1:25").rpartition(":")
    password = get("_PASSWORD")
    if password is None and (path := get("_PASSWORD_FILE")):
        password = Path(path).read_text(encoding="utf-8").strip()
    user = get("_USER")
    tls = get("_TLS") or ("starttls" if user else "none")
    if tls not in ("none", "starttls", "tls"):
        raise ValueError(f"CLEARCARD_SMTP_TLS must be none, starttls or tls, got {tls!r}")
    return SmtpConfig(host=host or "127.0.0.1", port=int(port or 25), sender=get("_FROM") or "clearcard@localhost",
                      tls=tls, username=user, password=password, ca_file=get("_CA_FILE"))  # type: ignore[arg-type]


def claim_timeout_from_env() -> float:
    """CLEARCARD_NOTIFY_CLAIM_TIMEOUT: seconds before a claimed, unsent notification is sent again."""
    raw = os.environ.get("CLEARCARD_NOTIFY_CLAIM_TIMEOUT", "").strip()
    return float(raw) if raw else store.CLAIM_TIMEOUT


@dataclass(frozen=True)
class Notifier:
    db: Database
    smtp: SmtpConfig
    vault: SecretVault | None = None
    claim_timeout: float = store.CLAIM_TIMEOUT

    async def handle(self, delivery: Delivery) -> None:
        """One event; a failed send brings the event back later (sent ones are not repeated)."""
        try:
            event = json.loads(delivery.body)
        except ValueError:
            raise Reject("event is not JSON") from None
        if not isinstance(event, dict):
            raise Reject("event is not a JSON object")
        for notice in await self.notices(event):
            await self.deliver(notice)

    async def notices(self, event: dict[str, object]) -> list[Notice]:
        """What an event tells whom (events of other kinds tell nothing)."""
        kind = event.get("event")
        if kind == "clear.finished":
            branch_id, period = event.get("branch_id"), event.get("period")
            if not (isinstance(branch_id, str) and isinstance(period, str)):
                # an event from a coordinator that does not name them yet: the view it publishes for us
                request = await self.db.fetch("SELECT branch_id, period FROM clear_requests_for_notify"
                                              " WHERE request_id = $1", event.get("request_id"))
                if not request:
                    return []
                branch_id, period = request[0]["branch_id"], request[0]["period"]
            summaries = await self.db.run(store.summaries_for, branch_id)
            summary = summary_notice(event, branch_id, period, summaries)  # type: ignore[arg-type]
            return ([summary] if summary else []) + failure_notices(event, branch_id, summaries)  # type: ignore[arg-type]
        if kind == "device.lock_warning":
            return [lock_notice(event)]
        if kind == "device.abandoned":
            return [abandoned_notice(event)]
        return []

    async def deliver(self, notice: Notice) -> None:
        """Send a notice to every contact of its branch on its channels, each once.

        A contact whose notification another sender claimed moments ago (or whose server is
        down) is asked again later: the event comes back (RetryLater) once the others went out.
        """
        later: list[str] = []
        for contact in await self.db.run(store.contacts_for, notice.branch_id):
            if contact.kind not in notice.channels:
                continue
            key = f"{notice.key}:{contact.kind}:{contact.address}"
            claim = await self.db.run(store.claim, key, contact, notice.subject, self.claim_timeout)
            if claim is store.Claim.SENT:
                continue
            if claim is store.Claim.BUSY:
                later.append(f"{notice.key} by {contact.kind} is being sent by another sender")
                continue
            try:
                if contact.kind == "email":
                    await send_email(self.smtp, contact.address, notice.subject, notice.text,
                                     message_id=idempotency_key(key))
                else:
                    secret = self.vault.unseal(contact.secret_cipher) if self.vault else None
                    await post_webhook(contact.address, {**notice.payload, "subject": notice.subject,
                                                         "text": notice.text}, secret,
                                       idempotency_key=idempotency_key(key))
            except SendFailed as exc:
                metrics.NOTIFICATIONS.labels(contact.kind, "failed").inc()
                await self.db.run(store.release, key)
                later.append(str(exc))
                continue
            metrics.NOTIFICATIONS.labels(contact.kind, "sent").inc()
            await self.db.run(store.sent, key)
            # never the address or URL itself: webhook URLs often carry tokens
            log.info("notification sent", notice=notice.key, channel=contact.kind,
                     endpoint=endpoint_label(contact.address))
        if later:
            raise RetryLater("; ".join(later)[:500])


def idempotency_key(dedupe_key: str) -> str:
    """The same key for every attempt at one notification to one contact: receivers drop repeats."""
    return hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:32]


async def run_notify(bus: Bus, db: Database, settings: Settings, *, smtp: SmtpConfig | None = None,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Consume clear events and notify branch contacts until cancelled."""
    await bus.declare(topology_for(NOTIFY_QUEUE))
    vault = await trio.to_thread.run_sync(SecretVault.open, settings.keys_dir)
    notifier = Notifier(db, smtp or smtp_from_env(), vault, claim_timeout_from_env())
    await bus.consume(NOTIFY_QUEUE.name, traced(SERVICE, NOTIFY_QUEUE.name, notifier.handle),
                      prefetch=8, task_status=task_status)
