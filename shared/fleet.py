"""The emulated fleet file (contract §5): seeds emulated devices and the bureau simulator.

A bad file is refused whole, with an error naming the line, so a gateway never starts on it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigurationError
from shared.messages.base import FAMILIES, INVOICE_TYPES, taxpayer_id_valid


class FleetError(ConfigurationError, ValueError):
    """The fleet file cannot be used; the message names the file and line."""


class FleetDevice(BaseModel):
    """One emulated device as the fleet file seeds it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=r"^[0-9]{12}$")
    family: Literal["ukey", "golden_tax_disk", "tax_control_disk"]
    taxpayer_id: str
    branch: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    machine_no: int = Field(default=0, ge=0, le=999)
    pin: str = Field(min_length=1, max_length=32)
    registered_pin: str | None = Field(default=None, max_length=32)
    pin_tries_left: int = Field(default=5, ge=0, le=10)
    period: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    invoice_types: tuple[str, ...] = Field(min_length=1)
    invoices_per_type: int = Field(default=20, ge=0, le=100_000)
    offline_pending: int = Field(default=0, ge=0, le=100_000)
    clock_skew_seconds: int = 0
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    declared: bool = True
    comparison: Literal["pass", "fail", "pending"] = "pass"
    # with comparison = "pending": minutes after the summary's report until the bureau's
    # comparison passes by itself (0 = at once); omitted = 30; -1 = stays pending until changed
    comparison_pending_minutes: int = Field(default=30, ge=-1, le=60 * 24 * 60)
    # False: the hardware is plugged in but the product was not told about it (contract §5);
    # operators enrol it with `clearcard device import`
    enrolled: bool = True

    @field_validator("taxpayer_id")
    @classmethod
    def _taxpayer(cls, value: str) -> str:
        if not taxpayer_id_valid(value):
            raise ValueError(f"{value!r} is not a valid unified social credit code (check character)")
        return value

    @field_validator("invoice_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if code not in INVOICE_TYPES:
                raise ValueError(f"unknown invoice type code {code!r}")
        if len(set(value)) != len(value):
            raise ValueError("an invoice type is listed twice")
        return value

    @property
    def pin_on_record(self) -> str:
        return self.registered_pin if self.registered_pin is not None else self.pin


@dataclass(frozen=True)
class Fleet:
    clock: datetime | None  # the emulated 'now' at first seeding; None = real time
    devices: tuple[FleetDevice, ...]

    def by_id(self) -> dict[str, FleetDevice]:
        return {d.id: d for d in self.devices}


_DEVICE_HEADER = re.compile(r"^\s*\[\[\s*device\s*\]\]")


def _device_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if _DEVICE_HEADER.match(line)]


def _line_of(lines: list[str], header_line: int, key: str) -> int:
    """The line of `key = ...` inside the device table whose header is on `header_line`."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for index in range(header_line, len(lines)):  # 0-based index of the lines after the header
        if _DEVICE_HEADER.match(lines[index]):
            break
        if pattern.match(lines[index]):
            return index + 1
    return header_line


def parse_fleet(text: str, source: str = "<fleet>") -> Fleet:
    """Validate a fleet file's text; raises FleetError naming the first bad line."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{source}: not valid TOML: {exc}") from None
    clock = None
    if "clock" in raw:
        try:
            clock = datetime.fromisoformat(str(raw["clock"]))
        except ValueError:
            raise FleetError(f"{source}: clock {raw['clock']!r} is not an ISO 8601 time") from None
        if clock.tzinfo is None:
            raise FleetError(f"{source}: clock must carry a UTC offset, e.g. +08:00")
    entries = raw.get("device", [])
    if not isinstance(entries, list):
        raise FleetError(f"{source}: 'device' must be an array of tables ([[device]])")
    lines = text.splitlines()  # once: a 10,000-device fleet has 150,000 lines
    headers = _device_lines(text)
    devices: list[FleetDevice] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        header = headers[index] if index < len(headers) else 1
        try:
            device = FleetDevice.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else "device"
            raise FleetError(
                f"{source}, line {_line_of(lines, header, key)}: device {index + 1} "
                f"field {key!r}: {err['msg']}"
            ) from None
        if device.id in seen:
            raise FleetError(
                f"{source}, line {_line_of(lines, header, 'id')}: device id {device.id} "
                f"appears twice (first at line {seen[device.id]})"
            )
        seen[device.id] = _line_of(lines, header, "id")
        devices.append(device)
    return Fleet(clock=clock, devices=tuple(devices))


def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"{path}: cannot read fleet file: {exc.strerror}") from None
    return parse_fleet(text, str(path))


assert set(FAMILIES) == {"ukey", "golden_tax_disk", "tax_control_disk"}
