"""The emulated fleet the bureau simulator tests run on, and their handle on the simulator."""

from __future__ import annotations

from dataclasses import dataclass

from shared.bus.memory import MemoryBus
from shared.bus.rpc import RpcClient

FLEET = """
clock = "2026-11-03T09:00:00+08:00"

[[device]]
id = "661500000001"
family = "tax_control_disk"
taxpayer_id = "91420100MA4K0001XK"
branch = "wuhan-hankou"
machine_no = 0
pin = "12345678"
period = "2026-10"
invoice_types = ["004", "007"]

[[device]]
id = "661500000002"
family = "ukey"
taxpayer_id = "91420100MA4K0002XL"
branch = "wuhan-hankou"
machine_no = 1
pin = "12345678"
period = "2026-10"
invoice_types = ["026"]
declared = false

[[device]]
id = "661500000003"
family = "golden_tax_disk"
taxpayer_id = "91420100MA4K0003XM"
branch = "wuhan-wuchang"
pin = "12345678"
period = "2026-10"
invoice_types = ["007"]
comparison = "fail"
"""


@dataclass
class Bureau:
    bus: MemoryBus
    rpc: RpcClient
