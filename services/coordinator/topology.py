"""The coordinator's own queues: commands (fleet operations, cancellations) and RPC (previews)."""

from __future__ import annotations

from shared.bus.topology import service_queue
from shared.messages.fleet import CLEAR_CANCEL, FLEET_CLEAR

COORDINATOR_COMMANDS = service_queue("coordinator.commands", FLEET_CLEAR, CLEAR_CANCEL)
COORDINATOR_RPC = service_queue("coordinator.rpc", "coordinator.*")  # coordinator.fleet_preview
