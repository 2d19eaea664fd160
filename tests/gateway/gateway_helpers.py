"""Helpers for the gateway tests: fleet files and write-back packages sealed like the bureau does."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.messages.base import taxpayer_check_char
from shared.writeback_package import emulated_device_key, seal
from tests.support.settings import local_settings

FLEET_CLOCK = "2026-11-03T09:00:00+08:00"
TAXPAYER_A = "91420100MA4K0001X" + taxpayer_check_char("91420100MA4K0001X")
TAXPAYER_B = "91420100MA4K0002X" + taxpayer_check_char("91420100MA4K0002X")


def device_toml(device_id: str, **fields: Any) -> str:
    """One [[device]] table; defaults make a ukey with period 2026-10 ready to clear."""
    values: dict[str, Any] = {
        "id": device_id, "family": "ukey", "taxpayer_id": TAXPAYER_A, "branch": "wuhan-hankou",
        "machine_no": 0, "pin": "12345678", "pin_tries_left": 5, "period": "2026-10",
        "invoice_types": ["004", "007"], "invoices_per_type": 5, "offline_pending": 0,
        "clock_skew_seconds": 0, "latency_ms": 0,
    }
    values.update(fields)
    lines = ["[[device]]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def fleet_toml(*devices: str, clock: str | None = FLEET_CLOCK) -> str:
    """A fleet file's text."""
    head = f'clock = "{clock}"\n\n' if clock else ""
    return head + "\n".join(devices)


def settings_for(data_dir: Path, fleet_text: str | None) -> Settings:
    """Settings with everything under `data_dir` and the fleet file written there."""
    fleet_file = None
    if fleet_text is not None:
        fleet_file = data_dir / "fleet.toml"
        fleet_file.write_text(fleet_text, encoding="utf-8")
    return local_settings(data_dir, fleet_file=fleet_file)


def sealed_package(
    device_id: str,
    taxpayer_id: str,
    *,
    period: str,
    invoice_types: list[str],
    challenge: str,
    issued_at: str = "2026-11-03T09:05:00+08:00",
    machine_no: int = 0,
    next_lock_date: str = "2026-12-15",
    clock_block: str | None = None,
    package_id: str | None = None,
    key_for: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A write-back package as the bureau builds it: fields in clear plus the sealed copy."""
    package_id = package_id or f"pkg-{uuid.uuid4().hex[:12]}"
    payload: dict[str, Any] = {
        "package_id": package_id, "device_id": device_id, "taxpayer_id": taxpayer_id,
        "machine_no": machine_no, "period": period, "invoice_types": invoice_types,
        "issued_at": issued_at, "challenge": challenge, "next_lock_date": next_lock_date,
        "clock_block": clock_block,
    }
    key = emulated_device_key(*(key_for or (device_id, taxpayer_id)))
    ciphertext, checksum = seal(package_id, payload, key)
    return {**payload, "ciphertext": ciphertext, "checksum": checksum}
