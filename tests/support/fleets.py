"""Fleet files for tests and benchmarks: one device's [[device]] table, whole fleets."""

from __future__ import annotations

from pathlib import Path

CLOCK = "2026-11-03T09:00:00+08:00"
BRANCH = "wuhan-hankou"


def device(device_id: str, family: str, taxpayer: str, types: list[str], **extra: object) -> str:
    lines = [
        "[[device]]", f'id = "{device_id}"', f'family = "{family}"', f'taxpayer_id = "{taxpayer}"',
        f'branch = "{extra.pop("branch", BRANCH)}"', f'machine_no = {extra.pop("machine_no", 0)}',
        'pin = "12345678"', 'period = "2026-10"',
        "invoice_types = [" + ", ".join(f'"{t}"' for t in types) + "]",
        f'invoices_per_type = {extra.pop("invoices_per_type", 5)}',
    ]
    for key, value in extra.items():
        lines.append(f"{key} = " + (f'"{value}"' if isinstance(value, str) else str(value).lower()))
    return "\n".join(lines) + "\n"


def two_family_fleet(path: Path, **first_device_extra: object) -> Path:
    """A UKey and a tax control disk in one branch, both ready to clear."""
    path.write_text(
        f'clock = "{CLOCK}"\n\n'
        + device("661500000001", "ukey", "91420100MA4K0001XK", ["004", "007", "026"], **first_device_extra)
        + "\n"
        + device("539900000004", "tax_control_disk", "91110000MA01A0BC3M", ["004", "025"], machine_no=1),
        encoding="utf-8",
    )
    return path


def fleet_text(*devices: str, clock: str | None = CLOCK) -> str:
    """A fleet file: an optional emulated clock and [[device]] tables (see `device`)."""
    return (f'clock = "{clock}"\n\n' if clock else "") + "\n".join(devices)


def one_device(device_id: str = "661500000001", **fields: object) -> str:
    """A ready-to-clear UKey of BRANCH (types 004 and 007), changed by `fields` of the fleet file."""
    values: dict[str, object] = {
        "id": device_id, "family": "ukey", "taxpayer_id": "91420100MA4K0001XK", "branch": BRANCH,
        "machine_no": 0, "pin": "12345678", "period": "2026-10", "invoice_types": ["004", "007"],
        "invoices_per_type": 5,
    }
    values.update(fields)
    lines = ["[[device]]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"
