"""Emulated fleet files of any size, for benchmarks (valid taxpayer ids, one period to clear)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.messages.base import taxpayer_check_char

FAMILIES = ("ukey", "golden_tax_disk", "tax_control_disk")
CLOCK = "2026-11-03T09:00:00+08:00"


def taxpayer(n: int) -> str:
    prefix = f"914201{n:011d}"  # 17 characters, digits only
    return prefix + taxpayer_check_char(prefix)


def device_id(n: int) -> str:
    return f"{660000000000 + n:012d}"


@dataclass(frozen=True)
class Group:
    """`devices` devices numbered from `first`, spread over `branches` branches named `prefix-NNNN`."""

    devices: int
    branches: int
    prefix: str = "bench"
    first: int = 0
    latency_ms: int = 0

    def branch_ids(self) -> list[str]:
        return [f"{self.prefix}-{b:04d}" for b in range(self.branches)]

    def members(self) -> list[tuple[str, str]]:
        """(device id, branch id) of every device of the group."""
        names = self.branch_ids()
        return [(device_id(self.first + n), names[n % self.branches]) for n in range(self.devices)]


def write_groups(path: Path, groups: list[Group], *, clock: str = CLOCK, types: tuple[str, ...] = ("004", "007"),
                 invoices_per_type: int = 5) -> None:
    """Write one fleet file holding every group (device numbers must not overlap)."""
    type_list = ", ".join(f'"{t}"' for t in types)
    parts = [f'clock = "{clock}"\n']
    for group in groups:
        for n, (device, branch) in enumerate(group.members(), start=group.first):
            parts.append(
                f'\n[[device]]\nid = "{device}"\nfamily = "{FAMILIES[n % 3]}"\n'
                f'taxpayer_id = "{taxpayer(n)}"\nbranch = "{branch}"\nmachine_no = 0\n'
                f'pin = "12345678"\nperiod = "2026-10"\ninvoice_types = [{type_list}]\n'
                f"invoices_per_type = {invoices_per_type}\nlatency_ms = {group.latency_ms}\n"
            )
    path.write_text("".join(parts), encoding="utf-8")


def write_fleet(path: Path, devices: int, branches: int, *, latency_ms: int = 0,
                clock: str = CLOCK, types: tuple[str, ...] = ("004", "007"),
                invoices_per_type: int = 5) -> list[str]:
    """Write a fleet of `devices` spread over `branches`; returns the branch ids."""
    group = Group(devices, branches, latency_ms=latency_ms)
    write_groups(path, [group], clock=clock, types=types, invoices_per_type=invoices_per_type)
    return group.branch_ids()
