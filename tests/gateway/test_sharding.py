"""Several gateway replicas on RabbitMQ: commands for one device go to one replica, with failover."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from gateway_helpers import device_toml, fleet_toml, settings_for

from device_gateway.emulator.backend import EmulatedBackend
from device_gateway.service import run_gateway
from device_gateway.topology import CONSISTENT_HASH, device_exchange, shard_queue, sharded_topology
from shared.bus.rabbitmq import RabbitBus
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.db import Database
from shared.messages.device import DeviceCommand, DeviceInfo
from tests.bus.conftest import fresh_vhost, vhost_url

DEVICES = [f"66150000{index:04d}" for index in range(1, 13)]
SHARDS = 4


def test_topology_names_and_arguments() -> None:
    topology = sharded_topology("default", SHARDS)
    assert device_exchange("default") in topology.exchanges
    assert device_exchange("default").type == CONSISTENT_HASH
    shard = shard_queue("default", 0)
    assert shard in topology.queues and shard.arguments()["x-single-active-consumer"] is True
    assert shard.bindings == ((device_exchange("default").name, "1"),)
    with pytest.raises(ValueError):
        sharded_topology("default", 0)


@pytest.mark.rabbitmq
async def test_replicas_serve_each_device_from_one_replica_and_fail_over(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: dict[str, list[int]] = defaultdict(list)
    execute: Callable[..., bytes] = EmulatedBackend._execute

    def record(self: EmulatedBackend, device: Any, message: Any) -> bytes:
        served[device.ref.device_id].append(id(self))
        return execute(self, device, message)

    monkeypatch.setattr(EmulatedBackend, "_execute", record)
    settings = settings_for(tmp_path, fleet_toml(*(device_toml(d) for d in DEVICES)))

    async def replica(url: str, name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with RabbitBus.connect(url, name=name) as bus, trio.open_nursery() as inner:
                await inner.start(functools.partial(run_gateway, bus, database, settings,
                                                    scan_interval=3600, shards=SHARDS))
                task_status.started(scope)

    async def info_of_every_device(rpc: RpcClient) -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for device_id in DEVICES:
                    nursery.start_soon(rpc.call, COMMANDS, gateway_routing_key("default", "info"),
                                       DeviceCommand(device_id=device_id), DeviceInfo)

    async with fresh_vhost() as vhost, trio.open_nursery() as nursery:
        url = vhost_url(vhost)
        first: trio.CancelScope = await nursery.start(replica, url, "gateway-a")
        await nursery.start(replica, url, "gateway-b")
        async with RabbitBus.connect(url, name="caller") as caller, RpcClient.open(caller, "test") as rpc:
            served.clear()
            await info_of_every_device(rpc)
            await info_of_every_device(rpc)
            before = {d: set(ids) for d, ids in served.items()}
            assert set(before) == set(DEVICES)
            assert all(len(ids) == 1 for ids in before.values()), before  # one replica per device
            first.cancel()  # replica A goes away: its shards move to B
            served.clear()
            await info_of_every_device(rpc)
            after = {d: set(ids) for d, ids in served.items()}
            assert set(after) == set(DEVICES) and all(len(ids) == 1 for ids in after.values())
            assert set().union(*after.values()).isdisjoint(set().union(*before.values())) or \
                len(set().union(*before.values())) == 2
        nursery.cancel_scope.cancel()
