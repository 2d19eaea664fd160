"""The coordinator's own command queue (fleet operations and cancellations)."""

from __future__ import annotations

from shared.bus.topology import service_queue
from shared.messages.fleet import CLEAR_CANCEL, FLEET_CLEAR

COORDINATOR_COMMANDS = service_queue("coordinator.commands", FLEET_CLEAR, CLEAR_CANCEL)
