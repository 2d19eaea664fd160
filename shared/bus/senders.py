"""Which services may send to each queue, and for how long a signed identity stays good there.

The table beside topology.py: a consumer accepts a message only from a service listed for its
queue (shared/authz/identity.py checks the signed identity against it). The first matching rule
wins; a queue no rule names accepts no internal message at all. Public queues take requests
from outside, whose bearer tokens are checked instead.

`max_age` bounds replays: an identity older than that is refused. It is minutes for commands,
whose callers time out and retry with fresh messages anyway. Hand-offs that nobody sends again
keep their identity for a day, because they wait in their queue for as long as their consumer
is down or behind (an outage, a backlog of a whole fleet's requests), and a replay of one is a
no-op: audit records are stored once by record id, an authorized clear request is taken once by
request id (a repeat only publishes its final event again), an event is notified once by its id.
Minutes there would dead-letter every request still queued after a five-minute outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.bus.topology import (
    AUDIT,
    AUDIT_QUERIES,
    AUTH_COMMANDS,
    AUTH_REQUESTS,
    AUTHORITY,
    BACKUP,
    BACKUP_ADMIN,
    COORDINATOR_REQUESTS,
)

# Every service that signs messages (clearcard.runtime.SERVICES, plus the command line).
SERVICES = frozenset({"audit", "auth", "authority-sim", "backup", "cli", "console", "coordinator", "gateway",
                      "notify"})
IDENTITY_TTL = 300.0  # seconds
HANDOFF_TTL = 86_400.0  # audit records, authorized clear requests, events for notify
AUDIT_TTL = HANDOFF_TTL

# Queues where requests from outside arrive (contract §3): their handlers check bearer tokens.
COORDINATOR_COMMANDS = "clearcard.coordinator.commands"  # fleet.clear, clear.cancel
COORDINATOR_RPC = "clearcard.coordinator.rpc"  # coordinator.fleet_preview
PUBLIC = frozenset({AUTH_REQUESTS.name, COORDINATOR_COMMANDS})


@dataclass(frozen=True)
class SenderRule:
    """Queues whose name matches `pattern` (fnmatch) take messages signed by `services`."""

    pattern: str
    services: frozenset[str]
    max_age: float = IDENTITY_TTL

    def allows(self, service: str) -> bool:
        return service in self.services


RPC_SERVERS = frozenset({"gateway", "backup", "authority-sim", "audit"})
EVENT_SOURCES = frozenset({"coordinator", "auth"})  # publish on clearcard.events (and to reply_to)

RULES: tuple[SenderRule, ...] = (
    # reply queues (`<connection>.reply.<uuid>`, first: a connection may be named after its
    # service) take RPC answers and, bound to clearcard.events, events
    SenderRule("*.reply.*", RPC_SERVERS | EVENT_SOURCES),
    SenderRule("amq.gen-*", RPC_SERVERS | EVENT_SOURCES),  # the in-memory bus's reply queues
    SenderRule(COORDINATOR_REQUESTS.name, frozenset({"auth"}), max_age=HANDOFF_TTL),  # clear.authorized
    SenderRule(BACKUP.name, frozenset({"coordinator", "cli"})),  # backup.take; backup.schedule
    SenderRule(AUTHORITY.name, frozenset({"coordinator"})),  # the bureau's operations
    SenderRule(AUDIT_QUERIES.name, frozenset({"console"})),  # the log read at the console (search, export, verify)
    SenderRule(BACKUP_ADMIN.name, frozenset({"console"})),  # backups listed, verified, restored at the console
    SenderRule(AUDIT.name, SERVICES, max_age=AUDIT_TTL),
    SenderRule(AUTH_COMMANDS.name, frozenset({"console"})),  # auth.login: people signing in at the console
    SenderRule(COORDINATOR_RPC, frozenset({"console"})),  # fleet previews for the console
    SenderRule("clearcard.gateway.*.shard.*", frozenset({"gateway"})),  # forwarded by a gateway replica
    SenderRule("clearcard.gateway.*", frozenset({"coordinator", "backup", "console"})),  # device commands
    SenderRule("clearcard.notify", EVENT_SOURCES, max_age=HANDOFF_TTL),  # clear.finished, device.lock_warning
)


def origin_queue(queue: str) -> str:
    """A dead-letter queue is governed by the rule of the queue it collects from."""
    return queue.removesuffix(".dead")


def is_public(queue: str) -> bool:
    return origin_queue(queue) in PUBLIC


def rule_for(queue: str) -> SenderRule | None:
    """The rule for `queue`, or None: no internal message is accepted there."""
    name = origin_queue(queue)
    return next((r for r in RULES if fnmatchcase(name, r.pattern)), None)
