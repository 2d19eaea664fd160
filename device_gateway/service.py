"""The device gateway service: the devices it finds, one actor per enrolled device, commands over the bus.

With a fleet file (CLEARCARD_FLEET) the local devices are emulated; without one they are the
host's own USB devices through libusb-1.0. USB/IP servers (cabinets) add theirs either way.
The same family drivers run on every one of these pyusb backends.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from device_gateway.config import GatewayEnv
from device_gateway.drivers import load_drivers, present_devices
from device_gateway.emulator import EmulatedBackend, EmulatorStore
from device_gateway.emulator import commands as emulator_commands
from device_gateway.hotplug import SCAN_INTERVAL_S, watch_presence
from device_gateway.operations import Gateway
from device_gateway.roster import Roster, scanner
from device_gateway.sharding import FORWARD_PREFETCH, forwarder, from_shard
from device_gateway.topology import shard_queue, sharded_topology
from device_gateway.transports.libusb import UsbUnavailable, open_libusb
from device_registry.enrolment import Enrolment
from device_registry.pins import PinVault
from device_registry.registry import AuditEntry, BusAudit
from device_registry.store import enrol_seeded
from shared.bus.api import Bus, BusError
from shared.bus.middleware import traced
from shared.bus.rpc import Operation, rpc_server
from shared.bus.topology import AUDIT, gateway_queue, topology_for
from shared.config import Settings
from shared.db import Database
from shared.fleet import Fleet, load_fleet
from shared.outages import keep_running

log = structlog.get_logger("clearcard.gateway")

# commands in flight: different devices run in parallel, each device in turn (its actor's
# mailbox); sized for a thousand-device gateway whose commands each take a second
PREFETCH = 1024


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
    """Serve the gateway's queue until cancelled.

    It does not start (a ConfigurationError, printed by `clearcard serve` without a traceback)
    on a bad fleet file (FleetError) or, with no fleet file, where libusb-1.0 is missing
    (UsbUnavailable; with USB/IP servers configured it serves theirs alone).

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
    vault = await trio.to_thread.run_sync(PinVault.open, settings.keys_dir)
    attached: dict[str, str] = {}
    extra: dict[str, Operation] = {}
    if settings.fleet_file:
        fleet = load_fleet(settings.fleet_file)
        store = EmulatorStore(settings.emulator_dir)
        states = await trio.to_thread.run_sync(store.seed, fleet, datetime.now(UTC), settings.calendar)
        local: Any = EmulatedBackend(store, [states[d.id] for d in fleet.devices], calendar=settings.calendar)
        attached = {d.id: d.family for d in fleet.devices}
        await _enrol_fleet(bus, db, vault, fleet)
        extra = emulator_commands.operations(settings)  # the console's show / plug / unplug
        log.info("emulated devices", fleet=str(settings.fleet_file), devices=len(fleet.devices))
    else:
        try:
            local, library = open_libusb(env.libusb)
            log.info("the host's USB devices, through libusb-1.0", library=library)
        except UsbUnavailable as exc:
            if not servers:
                raise
            local = None  # a gateway in front of USB-sharing cabinets needs no local USB
            log.warning("only USB/IP devices are driven", reason=str(exc))
    backend: Any = local
    remote: Any = None
    if servers:
        # imported only when configured: the USB/IP transport needs the `usbip` package
        from device_gateway.transports.composite import CompositeBackend
        from device_gateway.transports.usbip import UsbipBackend

        remote = UsbipBackend(servers)
        backend = CompositeBackend([remote, local] if local is not None else [remote])
        log.info("USB/IP servers", servers=[f"{host}:{port}" for host, port in servers])
    try:
        await _serve(bus, db, vault, backend, attached, gateway_id, scan_interval, shards, task_status, extra)
    finally:
        if remote is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remote.close)


async def _enrol_fleet(bus: Bus, db: Database, vault: PinVault, fleet: Fleet) -> None:
    """A fleet file's devices are enrolled when first seeded, unless they say `enrolled = false`."""
    seeds = [(Enrolment(d.id, d.family, d.taxpayer_id, d.branch, d.machine_no), vault.seal(d.pin_on_record))
             for d in fleet.devices if d.enrolled]
    enrolled = await db.run(enrol_seeded, seeds)
    if enrolled:
        try:  # a first start may come before the audit service's
            await bus.declare(topology_for(AUDIT))
        except BusError as exc:  # a broker account of the gateway's own may not: the definitions hold it
            log.info("audit queue not declared by the gateway", reason=str(exc))
        await BusAudit(bus)([AuditEntry("device.import", "fleet file", "ok", detail={
            "source": "fleet", "enrolled": len(enrolled), "first": enrolled[:50]})])


async def _serve(
    bus: Bus,
    db: Database,
    vault: PinVault,
    backend: Any,
    attached: dict[str, str],
    gateway_id: str,
    scan_interval: float,
    shards: int,
    task_status: trio.TaskStatus[None],
    extra: dict[str, Operation],
) -> None:
    drivers = load_drivers()
    # no shared thread pool: every device actor has its worker thread of its own
    roster = Roster(gateway_id, db, drivers, backend, None, attached)
    gateway = Gateway(gateway_id, db, vault, roster)
    roster.probe = gateway.probe
    queue = gateway_queue(gateway_id)
    await bus.declare(sharded_topology(gateway_id, shards) if shards else topology_for(queue))
    seen: dict[str, str] = {}

    async def on_change(appeared: set[str], vanished: set[str]) -> None:
        if vanished:
            log.info("devices disconnected", devices=sorted(vanished))
        gateway.forget(vanished)
        await roster.observe({d: seen[d] for d in appeared if d in seen}, vanished)

    async with trio.open_nursery() as nursery:
        await nursery.start(roster.run)
        await nursery.start(functools.partial(keep_running, "device hot-plug", functools.partial(
            watch_presence, scanner(lambda: present_devices(backend, drivers), seen), on_change,
            interval=scan_interval)))
        answer = rpc_server(bus, {**gateway.operations(), **extra})
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
        log.info("gateway ready", gateway_id=gateway_id, devices=len(roster.actors))
        task_status.started()
