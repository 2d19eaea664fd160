"""Emulated fleet files of any size, for benchmarks (valid taxpayer ids, one period to clear)."""

from __future__ import annotations

from pathlib import Path

from shared.messages.base import taxpayer_check_char

FAMILIES = ("ukey", "golden_tax_disk", "tax_control_disk")


def taxpayer(n: int) -> str:
    prefix = f"914201{n:011d}"  # 17 characters, digits only
    return prefix + taxpayer_check_char(prefix)


def write_fleet(path: Path, devices: int, branches: int, *, latency_ms: int = 0,
                clock: str = "2026-11-03T09:00:00+08:00", types: tuple[str, ...] = ("004", "007"),
                invoices_per_type: int = 5) -> list[str]:
    """Write a fleet of `devices` spread over `branches`; returns the branch ids."""
    names = [f"bench-{b:04d}" for b in range(branches)]
    parts = [f'clock = "{clock}"\n']
    for n in range(devices):
        parts.append(
            f'\n[[device]]\nid = "{660000000000 + n:012d}"\nfamily = "{FAMILIES[n % 3]}"\n'
            f'taxpayer_id = "{taxpayer(n)}"\nbranch = "{names[n % branches]}"\nmachine_no = 0\n'
            f'pin = "12345678"\nperiod = "2026-10"\n'
            f"invoice_types = [{', '.join(repr(t).replace(chr(39), chr(34)) for t in types)}]\n"
            f"invoices_per_type = {invoices_per_type}\nlatency_ms = {latency_ms}\n"
        )
    path.write_text("".join(parts), encoding="utf-8")
    return names
