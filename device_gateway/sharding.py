"""Forwarding gateway commands to the device shards, and answering them from a shard."""

from __future__ import annotations

import json
from dataclasses import replace

from device_gateway.topology import OP_HEADER, device_exchange
from shared.bus.api import Bus, Delivery, Handler
from shared.bus.topology import gateway_routing_key

# forwarded one at a time per replica, so a replica never reorders what it took from the queue
FORWARD_PREFETCH = 1


def _device_id(body: bytes) -> str:
    try:
        value = json.loads(body).get("device_id")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def forwarder(bus: Bus, gateway_id: str) -> Handler:
    """Republish `gateway.<id>.<op>` commands keyed by device id (the shard then answers them)."""
    exchange = device_exchange(gateway_id).name

    async def forward(delivery: Delivery) -> None:
        op = delivery.routing_key.rsplit(".", 1)[-1]
        # a body without a device id still goes to some shard, whose RPC server refuses it
        await bus.publish(exchange, _device_id(delivery.body) or "-", delivery.body,
                          message_id=delivery.message_id, correlation_id=delivery.correlation_id,
                          reply_to=delivery.reply_to,
                          headers={**delivery.headers, OP_HEADER: op})

    return forward


def from_shard(gateway_id: str, handler: Handler) -> Handler:
    """Give a shard delivery back its `gateway.<id>.<op>` routing key before `handler` sees it."""

    async def handle(delivery: Delivery) -> None:
        op = str(delivery.headers.get(OP_HEADER, ""))
        await handler(replace(delivery, routing_key=gateway_routing_key(gateway_id, op)))

    return handle
