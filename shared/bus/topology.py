"""Every exchange and queue name, declared in one place with its retry and dead-letter companions.

Each work queue `clearcard.X` comes with:

- retry queues `clearcard.X.retry.<delay>` (one per delay of its `RetrySchedule`): a message whose
  handler met a database or broker outage is parked there; when its time is up the broker
  dead-letters it back to `clearcard.X` through the default exchange. Fixed per-queue TTLs keep
  each retry queue in expiry order (RabbitMQ only expires messages at a queue's head).
- a dead-letter queue `clearcard.X.dead` (bound to `clearcard.dlx` by the queue's name), for
  messages that can never be processed, failed too often, or ran out of retry time; `clearcard
  dlq` lists, shows and replays them.

Dead-lettering is at-least-once (RabbitMQ 3.10 quorum queues: `x-dead-letter-strategy` with
`x-overflow: reject-publish`), so a message is never lost on its way to a dead-letter or retry
queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.messages.fleet import CLEAR_CANCEL, FLEET_CLEAR

# contract §3
COMMANDS = "clearcard"  # topic: clear requests and internal commands
EVENTS = "clearcard.events"  # topic: public events
DEAD_LETTERS = "clearcard.dlx"  # topic: rejected and poison messages
DEFAULT = ""  # AMQP default exchange: routes to the queue named by the routing key (RPC replies)

CLEAR_REQUEST = "clear.request"
CLEAR_AUTHORIZED = "clear.authorized"  # auth -> coordinator, after the token passed

# How often a message may come back to a queue (a handler bug, a consumer that died while
# holding it) before it is dead-lettered as poison. Outages do not count: they retry later.
DELIVERY_LIMIT = 5


@dataclass(frozen=True)
class RetrySchedule:
    """When a message whose handler met an outage comes back, and for how long it may keep trying.

    The n-th retry waits `delays[n]` (the last delay repeats); once `budget` seconds have passed
    since its first failure, the next failure dead-letters it. Each distinct delay is one retry
    queue.
    """

    delays: tuple[float, ...] = (1.0, 10.0, 10.0, 10.0, 60.0, 60.0, 600.0)
    budget: float = 6 * 3600.0

    def delay(self, retries: int) -> float:
        """The wait before retry number `retries` (0 for the first)."""
        return self.delays[min(retries, len(self.delays) - 1)]

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.delays)))


RETRY_SCHEDULE = RetrySchedule()


def _label(seconds: float) -> str:
    """`200ms`, `10s`, `10m`, `2h`: a delay as it appears in a retry queue's name."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# dead-letter and retry hops keep the message in its queue until the target has taken it
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str = "topic"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing-key pattern)
    delivery_limit: int = DELIVERY_LIMIT
    single_active_consumer: bool = False
    retry: RetrySchedule = RETRY_SCHEDULE

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"

    def retry_queue(self, delay: float) -> str:
        """The retry queue holding messages for `delay` seconds (a level of `retry`)."""
        return f"{self.name}.retry.{_label(delay)}"

    @property
    def retry_queues(self) -> tuple[tuple[str, dict[str, object]], ...]:
        """(name, arguments) of each retry queue: its TTL dead-letters back to this queue."""
        return tuple(
            (self.retry_queue(delay), {
                "x-queue-type": "quorum",
                "x-message-ttl": max(1, round(delay * 1000)),
                "x-dead-letter-exchange": DEFAULT,
                "x-dead-letter-routing-key": self.name,
                **_AT_LEAST_ONCE,
            })
            for delay in self.retry.levels)

    def arguments(self) -> dict[str, object]:
        """Queue arguments as RabbitMQ takes them: durable quorum queue with a dead-letter queue."""
        args: dict[str, object] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTERS,
            "x-dead-letter-routing-key": self.name,
            "x-delivery-limit": self.delivery_limit,
            **_AT_LEAST_ONCE,
        }
        if self.single_active_consumer:
            args["x-single-active-consumer"] = True
        return args


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()

    def __add__(self, other: Topology) -> Topology:
        exchanges = self.exchanges + tuple(e for e in other.exchanges if e not in self.exchanges)
        queues = self.queues + tuple(q for q in other.queues if q not in self.queues)
        return Topology(exchanges, queues)


EXCHANGES = Topology(
    exchanges=(ExchangeSpec(COMMANDS), ExchangeSpec(EVENTS), ExchangeSpec(DEAD_LETTERS)),
)


def service_queue(name: str, *patterns: str, single_active_consumer: bool = False) -> QueueSpec:
    """A durable quorum queue `clearcard.<name>` bound to the commands exchange."""
    return QueueSpec(
        name=f"clearcard.{name}",
        bindings=tuple((COMMANDS, p) for p in patterns),
        single_active_consumer=single_active_consumer,
    )


AUTH_REQUESTS = service_queue("auth.requests", CLEAR_REQUEST)
AUTH_COMMANDS = service_queue("auth.commands", "auth.*")  # RPC to the auth service (auth.login)
COORDINATOR_REQUESTS = service_queue("coordinator.requests", CLEAR_AUTHORIZED)
BACKUP = service_queue("backup", "backup.*")
AUTHORITY = service_queue("authority", "authority.*")
AUDIT = service_queue("audit", "audit.*")
# reading the log and the backups: front ends ask the owning service instead of reading its tables
AUDIT_QUERIES = service_queue("audit.queries", "audit.query.*")
BACKUP_ADMIN = service_queue("backup.admin", "backup.admin.*")
AUDIT_RECORDS = "audit.query.records"
AUDIT_VERIFY = "audit.query.verify"
BACKUP_LIST = "backup.admin.list"
BACKUP_VERIFY = "backup.admin.verify"
BACKUP_RESTORE = "backup.admin.restore"
# fleet operations and cancellations (routing keys in shared/messages/fleet.py)
COORDINATOR_COMMANDS = service_queue("coordinator.commands", FLEET_CLEAR, CLEAR_CANCEL)
COORDINATOR_RPC = service_queue("coordinator.rpc", "coordinator.*")  # coordinator.fleet_preview
# the notify service follows public events
NOTIFY = QueueSpec(name="clearcard.notify", bindings=((EVENTS, "clear.finished"), (EVENTS, "device.lock_warning"),
                                                     (EVENTS, "device.abandoned")))


def gateway_routing_key(gateway_id: str, op: str) -> str:
    return f"gateway.{gateway_id}.{op}"


def gateway_queue(gateway_id: str) -> QueueSpec:
    """Commands for the devices one gateway owns."""
    return service_queue(f"gateway.{gateway_id}", f"gateway.{gateway_id}.*")


def gateway_shard_name(gateway_id: str, shard: int) -> str:
    """The queue of one shard of a sharded gateway (device_gateway/topology.py)."""
    return f"clearcard.gateway.{gateway_id}.shard.{shard}"


def topology_for(*queues: QueueSpec) -> Topology:
    return EXCHANGES + Topology(queues=queues)


ALL_SERVICES = topology_for(AUTH_REQUESTS, AUTH_COMMANDS, COORDINATOR_REQUESTS, BACKUP, BACKUP_ADMIN, AUTHORITY, AUDIT,
                            AUDIT_QUERIES)
# every work queue whose name does not depend on a deployment (gateway queues do)
WORK_QUEUES = (AUTH_REQUESTS, AUTH_COMMANDS, COORDINATOR_REQUESTS, COORDINATOR_COMMANDS, COORDINATOR_RPC, BACKUP,
               BACKUP_ADMIN, AUTHORITY, AUDIT, AUDIT_QUERIES, NOTIFY)
