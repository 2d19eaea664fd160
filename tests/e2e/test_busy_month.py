"""A busy month: a device with three types x 5,000 invoices in its period clears end to end.

On the in-memory bus and on real RabbitMQ (the services as a separate `clearcard serve all`
process): its period travels to the backup in pages (no message near the 64 KiB limit), the
backup verifies and restores all 15,000 invoices with the `clearcard` command, and a preview's
counts and amounts match the invoices the backup holds.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.messages.codec import MAX_MESSAGE_BYTES
from tests.support.fleets import BRANCH, fleet_text, one_device
from tests.support.processes import cli, environment, serving
from tests.support.system import HookedBus, SystemFactory
from tests.support.vhosts import fresh_vhost

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]
DEVICE = "661500000001"
TYPES = ["004", "007", "026"]
PER_TYPE = 5_000
BUSY = fleet_text(one_device(DEVICE, invoice_types=TYPES, invoices_per_type=PER_TYPE))


def cli_env(settings: Settings, database_dsn: str) -> dict[str, str]:
    """`clearcard` commands against the running system's data dir and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(settings.data_dir), CLEARCARD_DATABASE_URL=database_dsn)
    return env


def largest_publish(bus: HookedBus) -> list[int]:
    """Record the size of every message published on the bus (the largest is `[0]`)."""
    largest = [0]

    async def measure(exchange: str, routing_key: str, body: bytes) -> None:
        largest[0] = max(largest[0], len(body))

    bus.hooks.append(measure)
    return largest


def restored_invoices(folder: Path) -> list[dict[str, Any]]:
    invoices = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    assert isinstance(invoices, list)
    return invoices


def totals(invoices: list[dict[str, Any]]) -> dict[str, tuple[int, str, str]]:
    """Per type: invoices, amount and tax net of red-letter invoices (void ones carry none)."""
    count: Counter[str] = Counter()
    amount: dict[str, Decimal] = defaultdict(Decimal)
    tax: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        count[invoice["invoice_type"]] += 1
        if invoice["kind"] != "void":
            amount[invoice["invoice_type"]] += Decimal(invoice["amount"])
            tax[invoice["invoice_type"]] += Decimal(invoice["tax"])
    return {t: (count[t], f"{amount[t]:.2f}", f"{tax[t]:.2f}") for t in count}


async def test_a_busy_month_clears_and_its_backup_restores_every_invoice(
    make_system: SystemFactory, database_url: str, tmp_path: Path
) -> None:
    async with make_system(BUSY) as system:
        largest = largest_publish(system.bus)
        followed = await system.clear()
    assert followed.final["status"] == "succeeded", followed.final
    [result] = followed.final["results"]
    assert result["outcome"] == "cleared"
    assert 0 < largest[0] <= MAX_MESSAGE_BYTES  # no message carried the period whole
    env = cli_env(system.settings, database_url)
    verified = await cli(env, "backup", "verify", result["backup_id"], check=False)
    assert verified.returncode == 0, verified.stderr.decode()
    restored = tmp_path / "restored"
    done = await cli(env, "backup", "restore", result["backup_id"], "--to", str(restored), check=False)
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads((restored / "manifest.json").read_text())
    assert (manifest["device_id"], manifest["period"], manifest["machine_no"]) == (DEVICE, "2026-10", 0)
    assert manifest["taxpayer_id"] == "91420100MA4K0001XK" and manifest["invoice_count"] == 15_000
    invoices = restored_invoices(restored)
    assert len(invoices) == 15_000
    assert Counter(i["invoice_type"] for i in invoices) == dict.fromkeys(TYPES, PER_TYPE)
    assert len({(i["code"], i["number"]) for i in invoices}) == 15_000
    monitoring = json.loads((restored / "monitoring.json").read_text())
    assert monitoring["lock_date"] == "2026-11-15" and set(monitoring["types"]) == set(TYPES)
    summaries = json.loads((restored / "summaries.json").read_text())
    assert {s["invoice_type"]: s["normal_count"] + s["negative_count"] + s["void_count"]
            for s in summaries} == dict.fromkeys(TYPES, PER_TYPE)


async def test_a_preview_of_a_busy_month_counts_and_sums_every_invoice(
    make_system: SystemFactory, database_url: str, tmp_path: Path
) -> None:
    async with make_system(BUSY) as system:
        preview = await system.clear(preview=True)
        narrowed = await system.clear(preview=True, invoice_types=["026"])
        followed = await system.clear(mode="manual", confirm=preview.final["confirmation"])
    assert preview.final["event"] == "clear.preview"
    assert followed.final["status"] == "succeeded", followed.final
    [planned] = preview.final["plan"]
    assert planned["action"] == "clear" and planned["device_id"] == DEVICE
    # what the backup holds, read back through the product's own restore: the preview must match it
    [result] = followed.final["results"]
    restored = tmp_path / "restored"
    await cli(cli_env(system.settings, database_url), "backup", "restore", result["backup_id"],
              "--to", str(restored))
    expected = totals(restored_invoices(restored))
    shown = {line["invoice_type"]: (line["invoice_count"], line["amount"], line["tax"])
             for line in planned["types"]}
    assert shown == expected and set(shown) == set(TYPES)
    assert all(count == PER_TYPE for count, _, _ in shown.values())
    [only] = narrowed.final["plan"]
    assert [(t["invoice_type"], t["invoice_count"], t["amount"]) for t in only["types"]] == [
        ("026", *expected["026"][:2])]


@pytest.mark.rabbitmq
async def test_a_busy_month_clears_over_rabbitmq_with_the_services_in_their_own_process(
    tmp_path: Path, database_url: str
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(BUSY, encoding="utf-8")
    async with fresh_vhost() as url:
        env = environment(tmp_path / "data", url, database_url, fleet)
        async with serving(env, "all", log=tmp_path / "serve.log"):
            cleared = await cli(env, "clear", "--branch", BRANCH, "--period", "2026-10", "--json", check=False)
        assert cleared.returncode == 0, cleared.stderr.decode()[-3000:]
        final = json.loads(cleared.stdout)
        assert final["status"] == "succeeded", final
        [result] = final["results"]
        [listed] = json.loads((await cli(env, "backup", "list", "--json")).stdout)
        assert listed["backup_id"] == result["backup_id"] and listed["device_id"] == DEVICE
        verified = await cli(env, "backup", "verify", result["backup_id"], check=False)
        assert verified.returncode == 0, verified.stderr.decode()
        restored = tmp_path / "restored"
        done = await cli(env, "backup", "restore", result["backup_id"], "--to", str(restored), check=False)
        assert done.returncode == 0, done.stderr.decode()
    invoices = restored_invoices(restored)
    assert len(invoices) == 15_000
    assert Counter(i["invoice_type"] for i in invoices) == dict.fromkeys(TYPES, PER_TYPE)
    manifest = json.loads((restored / "manifest.json").read_text())
    assert (manifest["device_id"], manifest["period"], manifest["invoice_count"]) == (DEVICE, "2026-10", 15_000)
