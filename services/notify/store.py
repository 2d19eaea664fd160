"""Branch contacts and the sent-notification ledger (asyncio-flavoured, run through Database.run)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Contact:
    branch_id: str
    kind: str  # email | webhook
    address: str


async def set_contacts(conn: asyncpg.Connection, branch_id: str, contacts: list[tuple[str, str]]) -> None:
    """Replace a branch's contacts with `contacts` [(kind, address)]; '*' is every branch."""
    await conn.execute("DELETE FROM branch_contacts WHERE branch_id = $1", branch_id)
    await conn.executemany("INSERT INTO branch_contacts (branch_id, kind, address) VALUES ($1, $2, $3)",
                           [(branch_id, kind, address) for kind, address in contacts])


async def contacts_for(conn: asyncpg.Connection, branch_id: str) -> list[Contact]:
    rows = await conn.fetch(
        "SELECT branch_id, kind, address FROM branch_contacts WHERE branch_id = $1 OR branch_id = '*'"
        " ORDER BY kind, address", branch_id)
    return [Contact(**dict(r)) for r in rows]


async def all_contacts(conn: asyncpg.Connection) -> list[Contact]:
    rows = await conn.fetch("SELECT branch_id, kind, address FROM branch_contacts ORDER BY branch_id, kind, address")
    return [Contact(**dict(r)) for r in rows]


async def claim(conn: asyncpg.Connection, key: str, contact: Contact, subject: str) -> bool:
    """Reserve a notification before sending; False if it was sent (or is being sent) already."""
    row = await conn.fetchrow(
        "INSERT INTO notifications_sent (dedupe_key, branch_id, kind, address, subject)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        key, contact.branch_id, contact.kind, contact.address, subject)
    return row is not None


async def sent(conn: asyncpg.Connection, key: str) -> None:
    await conn.execute("UPDATE notifications_sent SET state = 'sent', sent_at = now() WHERE dedupe_key = $1", key)


async def release(conn: asyncpg.Connection, key: str) -> None:
    """Sending failed: the notification may be tried again on redelivery."""
    await conn.execute("DELETE FROM notifications_sent WHERE dedupe_key = $1 AND state = 'sending'", key)
