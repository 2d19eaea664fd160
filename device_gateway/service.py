"""The device gateway service: emulated devices, one actor per device, commands over the bus."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from device_gateway.actor import DeviceActor
from device_gateway.config import GatewayEnv
from device_gateway.drivers import load_drivers, present_devices
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.hotplug import SCAN_INTERVAL_S, watch_presence
from device_gateway.operations import Gateway
from device_gateway.pins import PinVault
from device_gateway.repository import DeviceRow, register_devices
from device_gateway.sharding import FORWARD_PREFETCH, forwarder, from_shard
from device_gateway.topology import shard_queue, sharded_topology
from shared.bus.api import Bus
from shared.bus.middleware import traced
from shared.bus.rpc import rpc_server
from shared.bus.topology import gateway_queue, topology_for
from shared.config import Settings
from shared.db import Database
from shared.errors import ClearCardError
from shared.fleet import Fleet, load_fleet

log = structlog.get_logger("clearcard.gateway")

PREFETCH = 64  # commands in flight: different devices run in parallel, each device in turn
THREADS = 64  # worker threads for pyusb calls across all devices


async def run_gateway(
    bus: Bus,
    db: Database,
    settings: Settings,
    *,
    gateway_id: str | None = None,
    scan_interval: float = SCAN_INTERVAL_S,
    shards: int | None = None,
    usbip_servers: Sequence[tuple[str, int]] | None = None,
    environ: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway's queue until cancelled; a bad fleet file raises FleetError before start.

    `gateway_id` defaults to `settings.gateway_id` (CLEARCARD_GATEWAY_ID); `shards` and
    `usbip_servers` default to CLEARCARD_GATEWAY_SHARDS and CLEARCARD_USBIP_SERVERS (read from
    `environ`, default os.environ; device_gateway/config.py). With `shards` > 0 this process is
    one of several replicas: commands are spread over shard queues by device id
    (device_gateway/topology.py) so one device is served by one replica. Devices exported by
    the USB/IP servers are found before the local ones (device_gateway/transports/).
    """
    env = GatewayEnv.from_env(environ)
    gateway_id = settings.gateway_id if gateway_id is None else gateway_id
    shards = env.shards if shards is None else shards
    servers = env.usbip_servers if usbip_servers is None else tuple(usbip_servers)
    fleet = load_fleet(settings.fleet_file) if settings.fleet_file else Fleet(clock=None, devices=())
    store = EmulatorStore(settings.emulator_dir)
    states = await trio.to_thread.run_sync(store.seed, fleet, datetime.now(UTC), settings.calendar)
    local = EmulatedBackend(store, [states[d.id] for d in fleet.devices], calendar=settings.calendar)
    backend: Any = local
    remote: Any = None
    if servers:
        # imported only when configured: the USB/IP transport needs the `usbip` package
        from device_gateway.transports.composite import CompositeBackend
        from device_gateway.transports.usbip_backend import UsbipBackend

        remote = UsbipBackend(servers)
        backend = CompositeBackend([remote, local])
        log.info("USB/IP servers", servers=[f"{host}:{port}" for host, port in servers])
    try:
        await _serve(bus, db, settings, fleet, backend, gateway_id, scan_interval, shards, task_status)
    finally:
        if remote is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remote.close)


async def _serve(
    bus: Bus,
    db: Database,
    settings: Settings,
    fleet: Fleet,
    backend: Any,
    gateway_id: str,
    scan_interval: float,
    shards: int,
    task_status: trio.TaskStatus[None],
) -> None:
    drivers = load_drivers()
    vault = await trio.to_thread.run_sync(PinVault.open, settings.keys_dir)
    await db.run(register_devices, gateway_id, [
        DeviceRow(d.id, d.family, d.taxpayer_id, d.branch, d.machine_no, list(d.invoice_types),
                  vault.seal(d.pin_on_record))
        for d in fleet.devices
    ])
    limiter = trio.CapacityLimiter(THREADS)
    actors = {d.id: DeviceActor(d.id, drivers[d.family](backend, d.id), limiter) for d in fleet.devices}
    gateway = Gateway(gateway_id, db, vault, actors)
    queue = gateway_queue(gateway_id)
    await bus.declare(sharded_topology(gateway_id, shards) if shards else topology_for(queue))

    async def on_change(appeared: set[str], vanished: set[str]) -> None:
        if vanished:
            log.info("devices disconnected", devices=sorted(vanished))
            await gateway.mark_offline(sorted(vanished))
            for device_id in vanished:
                await actors[device_id].release()
        async with trio.open_nursery() as probes:
            for device_id in sorted(appeared):
                probes.start_soon(_probe, gateway, device_id)

    def scan() -> list[str]:
        return [serial for serial in present_devices(backend, drivers) if serial in actors]

    async with trio.open_nursery() as nursery:
        for actor in actors.values():
            await nursery.start(actor.run)
        await nursery.start(functools.partial(watch_presence, scan, on_change, interval=scan_interval))
        answer = rpc_server(bus, gateway.operations())
        if shards:
            await nursery.start(functools.partial(bus.consume, queue.name, forwarder(bus, gateway_id),
                                                  prefetch=FORWARD_PREFETCH))
            for shard in range(shards):
                name = shard_queue(gateway_id, shard).name
                handler = traced("gateway", name, from_shard(gateway_id, answer))
                await nursery.start(functools.partial(bus.consume, name, handler,
                                                      prefetch=max(1, PREFETCH // shards)))
        else:
            handler = traced("gateway", queue.name, answer)
            await nursery.start(functools.partial(bus.consume, queue.name, handler, prefetch=PREFETCH))
        log.info("gateway ready", gateway_id=gateway_id, devices=len(actors))
        task_status.started()


async def _probe(gateway: Gateway, device_id: str) -> None:
    """Ask a newly seen device for its state so the registry shows it."""
    try:
        await gateway.info_of(device_id)
    except ClearCardError as exc:
        log.warning("new device did not answer", device_id=device_id, code=str(exc.code),
                    error=exc.message)
