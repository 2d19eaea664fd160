"""Which devices this gateway drives: hardware it finds on its buses that the registry has in service.

The gateway owns what it sees (every sighting is recorded, enrolled or not); the registry
decides what the product drives. A device actor runs for each enrolled, not retired device this
gateway reaches; any other device is refused UNKNOWN_DEVICE in plain words, and hardware nobody
enrolled is recorded so `clearcard device list` shows it for operators to enrol. A device
enrolled (or retired) while the gateway runs is picked up at its first command, or within
REFRESH_S by the periodic check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
import trio

from device_gateway.actor import DeviceActor
from device_gateway.drivers.base import DeviceDriver
from device_gateway.repository import record_online, record_sightings
from device_registry import store as registry_store
from device_registry.registry import unknown_words
from shared.db import Database
from shared.errors import ClearCardError, ErrorCode
from shared.outages import OUTAGE_ERRORS

log = structlog.get_logger("clearcard.gateway")

_DB_TROUBLE = OUTAGE_ERRORS  # the database away for a while (shared/outages.py)
REFRESH_S = 5.0  # how soon a retirement closes a running actor's USB handle


class Roster:
    """The device actors of one gateway; run it with `nursery.start(roster.run)`.

    `attached` names hardware this gateway always serves, present or not (a fleet file's
    emulated devices): a command for one that is unplugged answers DEVICE_OFFLINE.
    """

    def __init__(self, gateway_id: str, db: Database, drivers: Mapping[str, type[DeviceDriver]],
                 backend: Any, limiter: trio.CapacityLimiter | None = None,
                 attached: Mapping[str, str] | None = None) -> None:
        self.gateway_id = gateway_id
        self.actors: dict[str, DeviceActor] = {}
        self._db = db
        self._drivers = drivers
        self._backend = backend
        self._limiter = limiter
        self._attached = dict(attached or {})
        self._present: dict[str, str] = {}  # serial -> family, from the last scan
        self._unenrolled: set[str] = set()  # present hardware the registry does not drive
        self._unrecorded: dict[str, str] = {}  # sightings not written yet
        self._gone: set[str] = set()  # disconnections not written yet
        self._nursery: trio.Nursery | None = None
        # asks a device that is newly driven for its state (set by the service: Gateway.probe)
        self.probe: Callable[[str], Awaitable[None]] | None = None
        self._lock = trio.Lock()  # one change of the actor set at a time

    def family_of(self, device_id: str) -> str | None:
        """The family of hardware this gateway reaches (the USB ids say), if it does."""
        return self._present.get(device_id) or self._attached.get(device_id)

    async def run(self, *, refresh: float = REFRESH_S,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the actors' tasks and follow the registry every `refresh` seconds, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._attached:
                await self._db.run(record_sightings, self.gateway_id, self._attached, False)
                in_service = await self._db.run(registry_store.in_service, sorted(self._attached))
                await self._start(in_service)
                self._note_unenrolled(set(self._attached) - in_service)
            task_status.started()
            while True:
                await trio.sleep(refresh)
                await self.refresh()

    async def _start(self, device_ids: set[str]) -> list[str]:
        """Start actors for these in-service devices; returns the ones started now."""
        assert self._nursery is not None, "roster not running"
        started = []
        for device_id in sorted(device_ids - set(self.actors)):
            family = self.family_of(device_id)
            driver = self._drivers.get(family) if family else None
            if driver is None:
                log.error("no driver for the device's family", device_id=device_id, family=family)
                continue
            actor = DeviceActor(device_id, driver(self._backend, device_id), self._limiter)
            await self._nursery.start(actor.run)
            self.actors[device_id] = actor
            self._unenrolled.discard(device_id)
            started.append(device_id)
        return started

    def _stop(self, device_ids: set[str]) -> None:
        for device_id in device_ids:
            actor = self.actors.pop(device_id, None)
            if actor is not None:
                log.info("device taken out of service; its handle is closed", device_id=device_id)
                actor.retire()

    def _note_unenrolled(self, device_ids: set[str]) -> None:
        new = device_ids - self._unenrolled
        if new:
            log.warning("devices found that are not enrolled; not driven (enrol them with "
                        "`clearcard device import`)", devices=sorted(new))
            self._unenrolled |= new

    def _probe_all(self, device_ids: list[str]) -> None:
        """Ask newly driven devices for their state, so the registry shows it at once."""
        if self.probe is None or self._nursery is None:
            return
        for device_id in device_ids:
            self._nursery.start_soon(self.probe, device_id)

    async def _flush(self) -> None:
        """Record the sightings and disconnections not recorded yet (the database may have been away)."""
        if self._unrecorded:
            seen = {d: f for d, f in self._unrecorded.items() if d in self._present}
            await self._db.run(record_sightings, self.gateway_id, seen, True)
            self._unrecorded.clear()
        if self._gone:
            await self._db.run(record_online, sorted(self._gone), False)
            self._gone.clear()

    async def observe(self, appeared: Mapping[str, str], vanished: set[str]) -> None:
        """A scan found `appeared` (serial -> family) and lost `vanished`: record them, drive what is enrolled.

        Database trouble is logged; the periodic refresh records and starts what was missed.
        """
        async with self._lock:
            driven = await self._observe(appeared, vanished)
        if driven and self.probe is not None:
            async with trio.open_nursery() as probes:  # the first scan: current before the gateway answers
                for device_id in driven:
                    probes.start_soon(self.probe, device_id)

    async def _observe(self, appeared: Mapping[str, str], vanished: set[str]) -> list[str]:
        for device_id in vanished:
            self._present.pop(device_id, None)
            self._unrecorded.pop(device_id, None)
            self._unenrolled.discard(device_id)
            if device_id in self.actors:
                await self.actors[device_id].release()
        self._gone |= vanished - set(appeared)
        self._present.update(appeared)
        self._unrecorded.update(appeared)
        self._gone -= set(appeared)
        try:
            await self._flush()
            if not appeared:
                return []
            in_service = await self._db.run(registry_store.in_service, sorted(appeared))
        except _DB_TROUBLE as exc:
            log.warning("devices found but the registry cannot be read now; retried shortly",
                        error=repr(exc))
            return []
        await self._start(in_service)
        self._note_unenrolled(set(appeared) - in_service)
        return sorted(set(appeared) & in_service)

    async def refresh(self) -> None:
        """Follow enrolments and retirements made while the gateway runs (`run` calls it every REFRESH_S)."""
        watched = sorted(set(self.actors) | set(self._present) | set(self._attached))
        if not watched:
            return
        async with self._lock:
            try:
                await self._flush()
                in_service = await self._db.run(registry_store.in_service, watched)
            except _DB_TROUBLE as exc:  # the database is back on a later round
                log.warning("cannot check enrolments", error=repr(exc))
                return
            self._stop(set(self.actors) - in_service)
            started = await self._start(in_service)
            self._note_unenrolled(set(self._present) - in_service)
            self._probe_all([d for d in started if d in self._present])

    async def actor(self, device_id: str) -> DeviceActor:
        """The device's actor; UNKNOWN_DEVICE (or DEVICE_OFFLINE) in plain words if there is none."""
        actor = self.actors.get(device_id)
        if actor is not None:
            return actor
        reachable = self.family_of(device_id) is not None
        in_service: set[str] = await self._db.run(registry_store.in_service, [device_id]) if reachable else set()
        if in_service:
            async with self._lock:  # enrolled since the last check: drive it now
                await self._start({device_id})
            if device_id in self.actors:
                return self.actors[device_id]
        found = await self._db.run(registry_store.standing, device_id)
        if found.enrolled and found.retired_at is None:
            if found.gateway_id == self.gateway_id:
                raise ClearCardError(ErrorCode.DEVICE_OFFLINE,
                                     f"Device {device_id} is not connected to gateway {self.gateway_id}.")
            raise ClearCardError(ErrorCode.UNKNOWN_DEVICE,
                                 f"Device {device_id} is not served by gateway {self.gateway_id}"
                                 + (f" (it was last seen on gateway {found.gateway_id})." if found.gateway_id
                                    else "; no gateway has seen it yet."))
        raise ClearCardError(ErrorCode.UNKNOWN_DEVICE, unknown_words(device_id, found))


def scanner(present: Callable[[], dict[str, str]], seen: dict[str, str]) -> Callable[[], list[str]]:
    """A scan for `watch_presence`: the serials present, with their families left in `seen`.

    The scan runs in a worker thread; `seen` is read by the trio side only after it returned.
    """

    def scan() -> list[str]:
        found = present()
        seen.clear()
        seen.update(found)
        return list(found)

    return scan
