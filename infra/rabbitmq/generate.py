"""Write infra/rabbitmq/definitions.json from shared/bus/topology.py (the one place names live)
and shared/bus/senders.py (who may send where): exchanges, queues, policies, and one broker
account per service with permissions limited to its own queues and messages (accounts.py).

    python infra/rabbitmq/generate.py            # rewrite the file
    python infra/rabbitmq/generate.py --check    # exit 1 if the committed file is out of date
    python infra/rabbitmq/generate.py --gateway wuhan-hankou --gateway beijing-haidian --output my.json

RabbitMQ loads the file at boot (`load_definitions` in rabbitmq.conf) or on
`rabbitmqctl import_definitions`. The queue arguments are exactly those the services declare,
so a service redeclaring a queue never meets a PRECONDITION_FAILED. Gateway queues exist per
gateway id: list each deployed gateway with --gateway (default: `default`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.rabbitmq import accounts  # noqa: E402  (after the path is set, for running as a script)
from shared.bus import topology  # noqa: E402

OUTPUT = Path(__file__).with_name("definitions.json")

# Applied on top of the declared arguments (which take precedence where both set something).
POLICIES: list[dict[str, Any]] = [
    {
        # poison and rejected messages are kept for people to look at (`clearcard dlq`) and never
        # dropped: past 1 GiB further dead letters stay in their queues (at-least-once
        # dead-lettering) until someone has looked, instead of pushing out the oldest
        "name": "clearcard-dead-letters",
        "pattern": r"^clearcard\..*\.dead$",
        "apply-to": "queues",
        "priority": 10,
        "definition": {"max-length-bytes": 1073741824, "overflow": "reject-publish"},
    },
    {
        # a backlog beyond this means the consumers are down: refuse new work instead of paging to disk
        "name": "clearcard-work-queues",
        "pattern": r"^clearcard\.(?!.*\.dead$).*",
        "apply-to": "queues",
        "priority": 0,
        "definition": {"max-length": 1000000, "overflow": "reject-publish"},
    },
]


def all_queues(gateways: list[str]) -> list[topology.QueueSpec]:
    """Every queue the topology module defines, plus one per deployed gateway."""
    found: list[topology.QueueSpec] = []
    for value in vars(topology).values():
        candidates = value.queues if isinstance(value, topology.Topology) else (value,)
        for spec in candidates:
            if isinstance(spec, topology.QueueSpec) and spec not in found:
                found.append(spec)
    for gateway_id in (g for g in gateways if g != "*"):  # '*' is an account for many, not a queue
        spec = topology.gateway_queue(gateway_id)
        if spec not in found:
            found.append(spec)
    return sorted(found, key=lambda q: q.name)


def all_exchanges() -> list[topology.ExchangeSpec]:
    found: dict[str, topology.ExchangeSpec] = {}
    for value in vars(topology).values():
        candidates = value.exchanges if isinstance(value, topology.Topology) else (value,)
        for spec in candidates:
            if isinstance(spec, topology.ExchangeSpec):
                found.setdefault(spec.name, spec)
    return [found[name] for name in sorted(found)]


def definitions(vhost: str = "/", gateways: list[str] | None = None, *, with_accounts: bool = True) -> dict[str, Any]:
    """The definitions document for one vhost (users are global: `with_accounts=False` leaves them out)."""
    gateways = gateways if gateways is not None else ["default"]
    queues = all_queues(gateways)
    exchanges = [
        {"name": e.name, "vhost": vhost, "type": e.type, "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}}
        for e in all_exchanges()
    ]
    queue_docs: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for spec in queues:
        queue_docs.append({"name": spec.name, "vhost": vhost, "durable": True, "auto_delete": False,
                           "arguments": spec.arguments()})
        queue_docs.append({"name": spec.dead_letter_queue, "vhost": vhost, "durable": True,
                           "auto_delete": False, "arguments": {"x-queue-type": "quorum"}})
        bindings.append({"source": topology.DEAD_LETTERS, "vhost": vhost, "destination": spec.dead_letter_queue,
                         "destination_type": "queue", "routing_key": spec.name, "arguments": {}})
        for name, arguments in spec.retry_queues:
            queue_docs.append({"name": name, "vhost": vhost, "durable": True, "auto_delete": False,
                               "arguments": arguments})
        for exchange, pattern in spec.bindings:
            bindings.append({"source": exchange, "vhost": vhost, "destination": spec.name,
                             "destination_type": "queue", "routing_key": pattern, "arguments": {}})
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": exchanges,
        "queues": queue_docs,
        "bindings": bindings,
        "policies": [{"vhost": vhost, **p} for p in POLICIES],
        **(accounts.definitions(vhost, gateways) if with_accounts else {}),
    }


def render(vhost: str = "/", gateways: list[str] | None = None, *, with_accounts: bool = True) -> str:
    return json.dumps(definitions(vhost, gateways, with_accounts=with_accounts), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--gateway", action="append",
                        help="a deployed gateway id (its queue and broker account); repeatable; '*' = one "
                             "account for every gateway (a Kubernetes DaemonSet)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render(args.vhost, args.gateway)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python infra/rabbitmq/generate.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
