"""`clearcard demo`: every service in one process, a sample fleet, one clear with live progress."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from clearcard.follow import Followed, new_request_id, submit_and_follow
from clearcard.runtime import ALL, infrastructure, start_services
from shared.authz.roles import Role
from shared.authz.tokens import KeyRing
from shared.china_time import CHINA
from shared.config import Settings
from shared.messages.clear import STEPS, ClearRequest

DEMO_BRANCH = "demo-wuhan"


def demo_clock(today: date | None = None) -> tuple[datetime, str]:
    """An emulated 'now' on the 3rd of this month, 09:00 Beijing time, and the closed period."""
    today = today or datetime.now(CHINA).date()
    clock = datetime(today.year, today.month, 3, 9, 0, tzinfo=CHINA)
    last = today.replace(day=1) - timedelta(days=1)
    return clock, f"{last.year:04d}-{last.month:02d}"


SAMPLE_DEVICE_IDS = ("661500000001", "661500000002", "499000000003", "539900000004")


def sample_fleet(clock: datetime, period: str) -> str:
    """Four devices of three families in one branch, all ready to clear."""
    devices = [
        (SAMPLE_DEVICE_IDS[0], "ukey", "91420100MA4K0001XK", ["004", "007", "026"]),
        (SAMPLE_DEVICE_IDS[1], "ukey", "91420100MA4K0001XK", ["026"]),
        (SAMPLE_DEVICE_IDS[2], "golden_tax_disk", "91420100MA4K0002XL", ["004", "007"]),
        (SAMPLE_DEVICE_IDS[3], "tax_control_disk", "91110000MA01A0BC3M", ["004", "007", "025"]),
    ]
    parts = [f'clock = "{clock.isoformat()}"\n']
    for n, (device_id, family, taxpayer, types) in enumerate(devices):
        parts.append(
            f'\n[[device]]\nid = "{device_id}"\nfamily = "{family}"\ntaxpayer_id = "{taxpayer}"\n'
            f'branch = "{DEMO_BRANCH}"\nmachine_no = {n % 2}\npin = "88888888"\npin_tries_left = 5\n'
            f'period = "{period}"\ninvoice_types = {types!r}\ninvoices_per_type = 12\n'
            f"offline_pending = {2 if n == 0 else 0}\nlatency_ms = 40\n"
            'declared = true\ncomparison = "pass"\n'.replace("'", '"')
        )
    return "".join(parts)


# More branches for the console (`clearcard demo --console`): a month worth looking at, with a
# return not yet filed and a comparison that fails beside devices that clear.
CONSOLE_BRANCHES: tuple[tuple[str, str, tuple[tuple[str, str, dict[str, object]], ...]], ...] = (
    ("demo-shanghai", "91310115MA1K4A2B3A", (("661500000011", "ukey", {}), ("499000000012", "golden_tax_disk", {}),
                                            ("539900000013", "tax_control_disk", {"comparison": "fail"}))),
    ("demo-beijing", "91110105MA01C3D4ED", (("661500000021", "ukey", {"declared": False}),
                                           ("661500000022", "ukey", {}), ("499000000023", "golden_tax_disk", {}))),
)


def console_fleet(clock: datetime, period: str, latency_ms: int = 40) -> str:
    """The sample fleet plus two more branches, some of whose devices cannot be cleared yet."""
    parts = [sample_fleet(clock, period).replace("latency_ms = 40", f"latency_ms = {latency_ms}")]
    for branch, taxpayer, devices in CONSOLE_BRANCHES:
        for n, (device_id, family, extra) in enumerate(devices):
            lines = [f'\n[[device]]\nid = "{device_id}"\nfamily = "{family}"\ntaxpayer_id = "{taxpayer}"',
                     f'branch = "{branch}"\nmachine_no = {n}\npin = "88888888"\npin_tries_left = 5',
                     f'period = "{period}"\ninvoice_types = ["004", "007"]\ninvoices_per_type = 12',
                     f"latency_ms = {latency_ms}",
                     f"declared = {str(extra.get('declared', True)).lower()}",
                     f'comparison = "{extra.get("comparison", "pass")}"']
            parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def console_device_ids() -> list[str]:
    """Every device of `console_fleet`."""
    return [*SAMPLE_DEVICE_IDS, *(d for _, _, devices in CONSOLE_BRANCHES for d, _, _ in devices)]


def fresh_fleet(settings: Settings, fleet: str, device_ids: tuple[str, ...] | list[str]) -> Settings:
    """Settings using `fleet` as the emulated fleet (unless CLEARCARD_FLEET names one): the sample
    starts afresh every run, so its devices' saved state is dropped."""
    if settings.fleet_file is not None:
        return settings
    fleet_file = settings.data_dir / "demo-fleet.toml"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fleet_file.write_text(fleet, encoding="utf-8")
    for device_id in device_ids:
        for stale in settings.emulator_dir.glob(f"{device_id}*"):
            stale.unlink()
    return replace(settings, fleet_file=fleet_file)


def _table(devices: dict[str, dict[str, Any]], request_id: str) -> Table:
    table = Table(title=f"clear {request_id}", expand=False)
    table.add_column("device")
    table.add_column("step")
    table.add_column("progress")
    table.add_column("outcome")
    for device_id, row in devices.items():
        percent = int(row.get("percent", 0))
        bar = "█" * (percent // 5) + "░" * (20 - percent // 5)
        table.add_row(device_id, row.get("step", "waiting"), f"{bar} {percent:3d}%", row.get("outcome", ""))
    return table


async def run_demo(settings: Settings, console: Console) -> int:
    """Run the demo; returns the exit code (0 when every device cleared)."""
    clock, period = demo_clock()
    settings = fresh_fleet(settings, sample_fleet(clock, period), SAMPLE_DEVICE_IDS)
    token = KeyRing(settings.keys_dir).issue("demo-operator", Role.OPERATOR, [DEMO_BRANCH], ttl=600)
    request = ClearRequest(request_id=new_request_id(), branch_id=DEMO_BRANCH, period=period, mode="auto")
    console.print(f"[bold]ClearCard demo[/bold]: branch {DEMO_BRANCH}, period {period}, "
                  f"emulated device clock {clock.isoformat()}")
    console.print(f"data dir {settings.data_dir}; embedded PostgreSQL and in-process bus")
    devices: dict[str, dict[str, Any]] = {}
    with Live(_table(devices, request.request_id), console=console, refresh_per_second=8) as live:

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "clear.accepted":
                for d in event["devices"]:
                    devices.setdefault(d, {})
            elif event["event"] == "clear.progress":
                devices.setdefault(event["device_id"], {}).update(step=event["step"], percent=event["percent"])
            elif event["event"] == "clear.finished":
                for r in event["results"]:
                    devices.setdefault(r["device_id"], {})["outcome"] = r["outcome"] + (
                        f" ({r['error']['code']})" if r.get("error") else "")
            live.update(_table(devices, request.request_id))

        async with infrastructure(settings) as (bus, db), trio.open_nursery() as nursery:
            await start_services(nursery, ALL, bus, db, settings)
            with trio.fail_after(120):
                followed: Followed = await submit_and_follow(bus, request, token, on_event=on_event)
            nursery.cancel_scope.cancel()
    final = followed.final
    console.print()
    console.print(f"steps per device: {' → '.join(s.value for s in STEPS)}")
    console.print(f"result: [bold]{final.get('status', final['event'])}[/bold]")
    for r in final.get("results", []):
        console.print(f"  {r['device_id']}: {r['outcome']}"
                      + (f" — {r['error']['code']}: {r['error']['message']}" if r.get("error") else "")
                      + (f" (backup {r['backup_id']})" if r.get("backup_id") else ""))
    if final["event"] == "clear.rejected":
        console.print(f"  rejected: {final['error']['code']}: {final['error']['message']}")
    console.print(f"trace id: [bold]{final['trace_id']}[/bold]")
    return 0 if final.get("status") == "succeeded" else 1
