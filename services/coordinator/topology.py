"""The coordinator's own command queue (fleet operations and cancellations), named in shared/bus/topology.py."""

from __future__ import annotations

from shared.bus.topology import COORDINATOR_COMMANDS

__all__ = ["COORDINATOR_COMMANDS"]
