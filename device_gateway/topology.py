"""Queues for several gateway replicas serving one fleet: one device's commands on one replica.

The coordinator keeps publishing `gateway.<gateway_id>.<op>` to the commands exchange; those
land on the gateway's queue as before. With shards, every replica forwards what it takes from
that queue to a consistent-hash exchange with `routing_key = device id`; the exchange spreads
devices over N shard queues, each with a single active consumer. So each device's commands go
to one replica at a time, in queue order, while different devices run on different replicas;
when a replica stops, RabbitMQ hands its shards to another one.

Needs the `rabbitmq_consistent_hash_exchange` plugin (scripts/services enables it). Binding
keys of a consistent-hash exchange are weights; every shard gets the same weight.
"""

from __future__ import annotations

from shared.bus.topology import EXCHANGES, ExchangeSpec, QueueSpec, Topology, gateway_queue, gateway_shard_name

CONSISTENT_HASH = "x-consistent-hash"
SHARD_WEIGHT = "1"
OP_HEADER = "x-clearcard-op"  # the operation, since the shard's routing key is the device id


def device_exchange(gateway_id: str) -> ExchangeSpec:
    """The consistent-hash exchange spreading one gateway's devices over its shards."""
    return ExchangeSpec(f"clearcard.gateway.{gateway_id}.devices", type=CONSISTENT_HASH)


def shard_queue(gateway_id: str, shard: int) -> QueueSpec:
    """Shard `shard` of a gateway's devices: one replica consumes it at a time."""
    return QueueSpec(
        name=gateway_shard_name(gateway_id, shard),
        bindings=((device_exchange(gateway_id).name, SHARD_WEIGHT),),
        single_active_consumer=True,
    )


def sharded_topology(gateway_id: str, shards: int) -> Topology:
    """The gateway's command queue, its device exchange and its shard queues."""
    if shards < 1:
        raise ValueError("a sharded gateway needs at least one shard")
    return EXCHANGES + Topology(
        exchanges=(device_exchange(gateway_id),),
        queues=(gateway_queue(gateway_id), *(shard_queue(gateway_id, k) for k in range(shards))),
    )
