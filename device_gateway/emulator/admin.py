"""Operator view of emulated devices, from their state files (no running gateway needed).

Used by `clearcard emulator show|plug|unplug`. A device named in the fleet file but never
seeded is seeded here exactly as the gateway would, so the CLI works before the first start.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from device_gateway.emulator.clock import clock_abnormal, device_now
from device_gateway.emulator.device_rules import is_locked, lock_date, type_status
from device_gateway.emulator.state import DeviceState, seed_state
from device_gateway.emulator.store import EmulatorStateError, EmulatorStore
from shared.config import Settings
from shared.errors import ClearCardError, ErrorCode
from shared.fleet import FleetError, load_fleet

_DEVICE_ID = re.compile(r"^[0-9]{12}$")


def _load(settings: Settings, device_id: str) -> tuple[EmulatorStore, DeviceState]:
    if not _DEVICE_ID.match(device_id):
        raise ClearCardError(ErrorCode.INVALID_REQUEST, f"{device_id!r} is not a 12-digit device number")
    store = EmulatorStore(settings.emulator_dir)
    try:
        state = store.load(device_id)
    except EmulatorStateError as exc:
        raise ClearCardError(ErrorCode.INTERNAL, str(exc)) from None
    if state is None and settings.fleet_file is not None:
        try:
            fleet = load_fleet(settings.fleet_file)
        except FleetError as exc:
            raise ClearCardError(ErrorCode.INVALID_REQUEST, str(exc)) from None
        seed = fleet.by_id().get(device_id)
        if seed is not None:
            state = seed_state(seed, fleet.clock, datetime.now(UTC), settings.calendar)
            store.save(state)
    if state is None:
        raise ClearCardError(
            ErrorCode.UNKNOWN_DEVICE,
            f"no emulated device {device_id}: no state under {store.directory} and not in the fleet file",
        )
    return store, state


def show_device(settings: Settings, device_id: str) -> dict[str, Any]:
    """An emulated device's full state as plain JSON-able data (the PIN itself is never shown)."""
    store, state = _load(settings, device_id)
    now = device_now(state.clock_base, state.wall_base, datetime.now(UTC))
    today = now.date()
    return {
        "device_id": state.device_id,
        "family": state.family,
        "taxpayer_id": state.taxpayer_id,
        "branch": state.branch,
        "machine_no": state.machine_no,
        "plugged": store.is_plugged(device_id),
        "held_by_other_program": store.is_held(device_id),
        "clock": now.isoformat(),
        "clock_skew_seconds": state.clock_skew_seconds,
        "clock_abnormal": clock_abnormal(state.clock_skew_seconds),
        "open_period": state.open_period,
        "status": {t: type_status(state, t, today) for t in state.invoice_types},
        "lock_date": lock_date(state).isoformat(),
        "locked": is_locked(state, today),
        "pin_tries_left": state.pin_tries_left,
        "offline_pending": state.offline_pending,
        "invoices_per_type": state.invoices_per_type,
        "latency_ms": state.latency_ms,
        "reports": [r.model_dump() for r in state.reports],
        "writebacks": [w.model_dump() for w in state.writebacks],
    }


def plug(settings: Settings, device_id: str) -> None:
    """Connect an emulated device again (the gateway finds it on its next scan or command)."""
    store, _ = _load(settings, device_id)
    store.set_plugged(device_id, True)


def unplug(settings: Settings, device_id: str) -> None:
    """Pull an emulated device out: enumeration loses it and transfers fail with ENODEV."""
    store, _ = _load(settings, device_id)
    store.set_plugged(device_id, False)


def hold(settings: Settings, device_id: str, held: bool = True) -> None:
    """Another program takes the device (or gives it back): commands answer busy meanwhile."""
    store, _ = _load(settings, device_id)
    store.set_held(device_id, held)
