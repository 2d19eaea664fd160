"""The coordinator's own queues (fleet commands, cancellations, preview RPC), named in shared/bus/topology.py."""

from __future__ import annotations

from shared.bus.topology import COORDINATOR_COMMANDS, COORDINATOR_RPC

__all__ = ["COORDINATOR_COMMANDS", "COORDINATOR_RPC"]
