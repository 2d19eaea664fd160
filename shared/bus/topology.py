"""Every exchange and queue name, declared in one place with its dead-letter companion."""

from __future__ import annotations

from dataclasses import dataclass

# contract §3
COMMANDS = "clearcard"  # topic: clear requests and internal commands
EVENTS = "clearcard.events"  # topic: public events
DEAD_LETTERS = "clearcard.dlx"  # topic: rejected and poison messages
DEFAULT = ""  # AMQP default exchange: routes to the queue named by the routing key (RPC replies)

CLEAR_REQUEST = "clear.request"
CLEAR_AUTHORIZED = "clear.authorized"  # auth -> coordinator, after the token passed

# How often a message may come back to a queue before it is dead-lettered as poison.
DELIVERY_LIMIT = 5


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

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"

    def arguments(self) -> dict[str, object]:
        """Queue arguments as RabbitMQ takes them: durable quorum queue with a dead-letter queue."""
        args: dict[str, object] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTERS,
            "x-dead-letter-routing-key": self.name,
            "x-delivery-limit": self.delivery_limit,
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


def gateway_routing_key(gateway_id: str, op: str) -> str:
    return f"gateway.{gateway_id}.{op}"


def gateway_queue(gateway_id: str) -> QueueSpec:
    """Commands for the devices one gateway owns."""
    return service_queue(f"gateway.{gateway_id}", f"gateway.{gateway_id}.*")


def topology_for(*queues: QueueSpec) -> Topology:
    return EXCHANGES + Topology(queues=queues)


ALL_SERVICES = topology_for(AUTH_REQUESTS, AUTH_COMMANDS, COORDINATOR_REQUESTS, BACKUP, AUTHORITY, AUDIT)
