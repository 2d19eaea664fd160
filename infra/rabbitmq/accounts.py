"""One broker account per service, allowed only its own queues and the messages it sends.

Derived from the code's own tables: what each service may send comes from shared/bus/senders.py
(which services may send to which queue) and the queues' bindings in shared/bus/topology.py;
what it consumes is listed here. RabbitMQ checks:

- configure (declare) on its own queues, their `.dead` and `.retry.*` companions, its reply queues
  (`clearcard.<service>.reply.*`: the connection is named after the service) and the exchanges
  it declares;
- write on the exchanges it publishes to (`amq.default` for replies, and for parking a message in
  a retry queue), on its queues (binding) and on the dead-letter exchange its queues name;
- read on its queues (consuming) and on the exchanges it binds them to;
- topic permissions on `clearcard` and `clearcard.events`: the routing keys it may publish,
  so a gateway's account cannot send write-back commands nor a console's account events;
- the operators' tools (`cli`, `console`) may also read every dead-letter queue and send its
  messages back through `amq.default` (`clearcard dlq`, docs/operations/outages.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.bus import senders, topology

DEFAULT_EXCHANGE = "amq.default"  # what RabbitMQ's permissions call the default exchange
NOTIFY = "clearcard.notify"


@dataclass(frozen=True)
class Account:
    """What one service's broker user may do."""

    service: str
    user: str
    consumes: tuple[str, ...] = ()  # queue names (regexes) it consumes and declares, with `.dead`
    declares: tuple[str, ...] = (topology.COMMANDS, topology.EVENTS, topology.DEAD_LETTERS)
    binds_from: tuple[str, ...] = ()  # exchanges its queues (reply queues included) are bound to
    replies: bool = False  # it makes reply queues (RPC calls, following events)
    publishes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # exchange -> topic patterns
    direct: bool = False  # it publishes to the default exchange (RPC answers, reply_to copies)
    extra_exchanges: tuple[str, ...] = ()  # regexes of exchanges of its own it declares, binds and publishes to
    dead_letters: bool = False  # an operator's tool: every dead-letter queue, to show and replay

    def _queues(self) -> list[str]:
        own = [*self.consumes, *(f"{q}\\.dead" for q in self.consumes),
               *(f"{q}\\.retry\\.[0-9a-z]+" for q in self.consumes)]
        if self.dead_letters:
            own.append(r"clearcard\..+\.dead")
        if self.replies:
            own.append(re.escape(f"clearcard.{self.service}") + r"\.reply\..+")
        return own

    def permissions(self) -> dict[str, str]:
        """The configure/write/read regexes RabbitMQ matches against resource names."""
        exchanges = [re.escape(e) for e in self.declares] + list(self.extra_exchanges)
        # a consumer parks messages in its retry queues through the default exchange (and names it
        # as their dead-letter exchange); an operator's tool replays dead letters through it
        direct = self.direct or bool(self.consumes) or self.dead_letters
        published = ([re.escape(e) for e in self.publishes] + list(self.extra_exchanges)
                     + ([re.escape(DEFAULT_EXCHANGE)] if direct else []))
        if self.consumes:  # declaring a queue with a dead-letter exchange needs write on that exchange
            published.append(re.escape(topology.DEAD_LETTERS))
        bound = [re.escape(e) for e in self.binds_from] + list(self.extra_exchanges)
        queues = self._queues()
        return {"configure": _any_of(queues + exchanges), "write": _any_of(queues + published),
                "read": _any_of(queues + bound)}

    def topic_permissions(self) -> list[dict[str, str]]:
        """Per topic exchange, the routing keys this account may publish."""
        rows = []
        for exchange in (topology.COMMANDS, topology.EVENTS):
            patterns = self.publishes.get(exchange, ())
            rows.append({"exchange": exchange, "write": _any_of([topic_regex(p) for p in patterns]), "read": ".*"})
        return rows


def _any_of(parts: list[str]) -> str:
    # RabbitMQ reads an empty regex as "nothing": used where an account may not do a thing at all
    return "^(" + "|".join(sorted(set(parts))) + ")$" if parts else ""


def topic_regex(pattern: str) -> str:
    """An AMQP topic pattern (`*` one word, `#` any) as the regex topic permissions take."""
    words = []
    for word in pattern.split("."):
        words.append("[^.]+" if word == "*" else ".*" if word == "#" else re.escape(word))
    return r"\.".join(words)


def _sends(service: str) -> dict[str, tuple[str, ...]]:
    """Where `service` may publish, from the senders table and the bindings of the queues it names."""
    queues = [*topology.ALL_SERVICES.queues, topology.gateway_queue("*"),
              topology.QueueSpec(NOTIFY, ((topology.EVENTS, "#"),)),
              topology.QueueSpec(senders.COORDINATOR_RPC, ((topology.COMMANDS, "coordinator.*"),))]
    out: dict[str, set[str]] = {}
    for spec in queues:
        rule = senders.rule_for(spec.name)
        if rule is not None and rule.allows(service):
            for exchange, pattern in spec.bindings:
                out.setdefault(exchange, set()).add(pattern)
    if service in senders.EVENT_SOURCES:
        out.setdefault(topology.EVENTS, set()).add("#")
    if service in ("console", "cli"):  # the public entry points, with the caller's bearer token
        out.setdefault(topology.COMMANDS, set()).update({topology.CLEAR_REQUEST, "fleet.clear", "clear.cancel"})
    return {exchange: tuple(sorted(patterns)) for exchange, patterns in out.items()}


def _escaped(*names: str) -> tuple[str, ...]:
    return tuple(re.escape(n) for n in names)


def accounts(gateways: list[str]) -> list[Account]:
    """Every service's account; one per deployed gateway, each allowed only its own devices."""
    consumed = {
        "auth": _escaped(topology.AUTH_REQUESTS.name, topology.AUTH_COMMANDS.name),
        "coordinator": _escaped(topology.COORDINATOR_REQUESTS.name, senders.COORDINATOR_COMMANDS,
                                senders.COORDINATOR_RPC),
        "backup": _escaped(topology.BACKUP.name, topology.BACKUP_ADMIN.name),
        "audit": _escaped(topology.AUDIT.name, topology.AUDIT_QUERIES.name),
        "authority-sim": _escaped(topology.AUTHORITY.name),
        "notify": _escaped(NOTIFY),
        "console": (),
        "cli": (),
    }
    replies = {"coordinator", "backup", "console", "cli"}
    found = []
    for service, queues in consumed.items():
        binds = [topology.DEAD_LETTERS] if queues else []
        binds += [topology.COMMANDS] if service not in ("notify", "console", "cli") else [topology.EVENTS]
        found.append(Account(service, f"clearcard-{service}", consumes=queues, binds_from=tuple(binds),
                             replies=service in replies, publishes=_sends(service),
                             direct=service in senders.RPC_SERVERS | senders.EVENT_SOURCES | {"console"},
                             dead_letters=service in ("cli", "console")))
    for gateway_id in gateways:
        # '*': one account for gateways that cannot each hold their own (a Kubernetes DaemonSet);
        # each of them may then read the others' queues (docs/scaling.md)
        queue = re.escape("clearcard.gateway.") + ("[^.]+" if gateway_id == "*" else re.escape(gateway_id))
        devices = f"{queue}\\.devices"  # device_gateway/topology.py: the shards' consistent-hash exchange
        found.append(Account(
            "gateway", "clearcard-gateways" if gateway_id == "*" else f"clearcard-gateway-{gateway_id}",
            consumes=(queue, queue + r"\.shard\.\d+"), binds_from=(topology.COMMANDS, topology.DEAD_LETTERS),
            extra_exchanges=(devices,), publishes=_sends("gateway"), direct=True))
    return found


def definitions(vhost: str, gateways: list[str]) -> dict[str, list[dict[str, object]]]:
    """The users, permissions and topic permissions documents for `vhost` (no passwords: set
    them with `rabbitmqctl change_password`, or use client certificates; docs/scaling.md)."""
    every = accounts(gateways)
    return {
        "users": [{"name": a.user, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": []} for a in every],
        "permissions": [{"user": a.user, "vhost": vhost, **a.permissions()} for a in every],
        "topic_permissions": [{"user": a.user, "vhost": vhost, **row} for a in every for row in a.topic_permissions()],
    }
