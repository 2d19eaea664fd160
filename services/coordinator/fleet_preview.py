"""`coordinator.fleet_preview`: what a fleet clear would take, by the same rules `fleet.clear` uses.

The selection rules live in services/coordinator/fleet.py; a preview runs them and changes nothing.
The confirmation is a digest of the selected devices and their periods, so a front end can tell,
before it submits, whether the fleet still matches what the person saw.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from services.coordinator import fleet
from services.coordinator.clock import Clock, previous_period
from shared.authz.roles import covers
from shared.bus.rpc import Operation
from shared.db import Database
from shared.messages.fleet import PREVIEW_GROUPS, FleetGroup, FleetPlan, FleetPreview


def confirmation(groups: dict[tuple[str, str], list[str]], invoice_types: list[str]) -> str:
    """A digest naming exactly these (branch, period) -> devices and types."""
    digest = hashlib.sha256()
    for (branch_id, period), device_ids in sorted(groups.items()):
        digest.update(f"{branch_id}\x1f{period}\x1f{','.join(sorted(device_ids))}\x1e".encode())
    digest.update(",".join(sorted(invoice_types)).encode())
    return "fl1-" + digest.hexdigest()[:40]


async def preview(db: Database, clock: Clock, request: FleetPreview) -> FleetPlan:
    """The fleet clear's plan for `request`, within the caller's scope."""
    scope = tuple(request.scope)
    wanted = [b for b in request.filters.branches if b != "*"]
    everything = "*" in request.filters.branches
    now = clock.now()
    devices = await db.run(fleet.candidates, None if everything else wanted)
    chosen = [d for d in devices if fleet.selected(d, request.filters, now.date(), lambda b: covers(scope, b))]
    groups = fleet.group(chosen, request.period, previous_period(now))
    family_of = {d.device_id: d.family for d in chosen}
    listed = [FleetGroup(branch_id=branch_id, period=period, devices=len(ids),
                         families=dict(Counter(family_of[i] for i in ids)))
              for (branch_id, period), ids in sorted(groups.items())[:PREVIEW_GROUPS]]
    return FleetPlan(devices=sum(len(v) for v in groups.values()), requests=len(groups),
                     branches=len({b for b, _ in groups}), groups=listed, truncated=len(groups) > PREVIEW_GROUPS,
                     confirmation=confirmation(groups, list(request.filters.invoice_types)))


def preview_operation(db: Database, clock: Clock) -> Operation:
    """The `fleet_preview` operation of the coordinator's RPC queue."""

    async def run(request: FleetPreview) -> FleetPlan:
        return await preview(db, clock, request)

    return Operation(FleetPreview, run)
