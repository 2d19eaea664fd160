"""Branch contacts, their preferences and the sent-notification ledger (asyncio-flavoured)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import asyncpg

SUMMARY_CHOICES = ("all", "problems", "none")
# seconds after which a claim not marked sent is taken to be a dead sender's: well beyond the
# senders' own timeouts (10 s per SMTP or webhook call)
CLAIM_TIMEOUT = 300.0


@dataclass(frozen=True)
class Contact:
    branch_id: str
    kind: str  # email | webhook
    address: str
    secret_cipher: bytes | None = field(default=None, repr=False)  # webhooks: the signing secret, sealed


async def set_contacts(conn: asyncpg.Connection, branch_id: str, contacts: list[tuple[str, str]],
                       new_secrets: dict[str, bytes] | None = None) -> list[str]:
    """Replace a branch's contacts with `contacts` [(kind, address)]; '*' is every branch.

    A webhook kept from before keeps its secret; a new one takes its sealed secret from
    `new_secrets` (by URL). Returns the webhook URLs given a new secret.
    """
    old = {r["address"]: r["secret_cipher"] for r in await conn.fetch(
        "SELECT address, secret_cipher FROM branch_contacts WHERE branch_id = $1 AND kind = 'webhook'", branch_id)}
    await conn.execute("DELETE FROM branch_contacts WHERE branch_id = $1", branch_id)
    rows, added = [], []
    for kind, address in contacts:
        cipher = None
        if kind == "webhook":
            cipher = old.get(address)
            if cipher is None:  # new, or kept from before secrets existed: it gets one now
                cipher = (new_secrets or {}).get(address)
                added.append(address)
        rows.append((branch_id, kind, address, cipher))
    await conn.executemany(
        "INSERT INTO branch_contacts (branch_id, kind, address, secret_cipher) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING", rows)
    return added


async def set_summaries(conn: asyncpg.Connection, branch_id: str, summaries: str) -> None:
    """Whether the branch is sent a summary of every request, only of problems, or none."""
    if summaries not in SUMMARY_CHOICES:
        raise ValueError(f"summaries must be one of {', '.join(SUMMARY_CHOICES)}")
    await conn.execute(
        "INSERT INTO branch_notify_settings (branch_id, summaries) VALUES ($1, $2)"
        " ON CONFLICT (branch_id) DO UPDATE SET summaries = excluded.summaries, updated_at = now()",
        branch_id, summaries)


async def summaries_for(conn: asyncpg.Connection, branch_id: str) -> str:
    """The branch's own choice, else the '*' default, else every request ('all')."""
    value = await conn.fetchval(
        "SELECT summaries FROM branch_notify_settings WHERE branch_id = $1 OR branch_id = '*'"
        " ORDER BY branch_id = '*' LIMIT 1", branch_id)
    return str(value or "all")


async def contacts_for(conn: asyncpg.Connection, branch_id: str) -> list[Contact]:
    rows = await conn.fetch(
        "SELECT branch_id, kind, address, secret_cipher FROM branch_contacts WHERE branch_id = $1 OR branch_id = '*'"
        " ORDER BY kind, address", branch_id)
    return [Contact(**dict(r)) for r in rows]


async def all_contacts(conn: asyncpg.Connection) -> list[Contact]:
    rows = await conn.fetch("SELECT branch_id, kind, address FROM branch_contacts ORDER BY branch_id, kind, address")
    return [Contact(**dict(r)) for r in rows]


class Claim(enum.Enum):
    TAKEN = "taken"  # ours to send now
    SENT = "sent"  # it went out before: never again
    BUSY = "busy"  # another sender claimed it moments ago: ask again after the claim timeout


async def claim(conn: asyncpg.Connection, key: str, contact: Contact, subject: str,
                stale_after: float = CLAIM_TIMEOUT) -> Claim:
    """Reserve a notification before sending it.

    A claim whose sender died before marking it sent (killed mid-send) is taken over once it is
    older than `stale_after` seconds, so a claimed notification is retried, not lost.
    """
    row = await conn.fetchrow(
        "INSERT INTO notifications_sent AS n (dedupe_key, branch_id, kind, address, subject)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (dedupe_key) DO UPDATE SET claimed_at = now(), attempts = n.attempts + 1"
        "   WHERE n.state = 'sending' AND n.claimed_at < now() - make_interval(secs => $6)"
        " RETURNING attempts",
        key, contact.branch_id, contact.kind, contact.address, subject, float(stale_after))
    if row is not None:
        return Claim.TAKEN
    state = await conn.fetchval("SELECT state FROM notifications_sent WHERE dedupe_key = $1", key)
    return Claim.SENT if state == "sent" else Claim.BUSY


async def sent(conn: asyncpg.Connection, key: str) -> None:
    await conn.execute("UPDATE notifications_sent SET state = 'sent', sent_at = now() WHERE dedupe_key = $1", key)


async def release(conn: asyncpg.Connection, key: str) -> None:
    """Sending failed: the notification may be tried again on redelivery."""
    await conn.execute("DELETE FROM notifications_sent WHERE dedupe_key = $1 AND state = 'sending'", key)
