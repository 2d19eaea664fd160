"""The bureau simulator (a simulator, not the tax bureau).

The bureau's real servers and package format are not public. This service answers the same
`authority.*` commands a real bureau connector would (offline invoice upload, summary report,
filing/comparison status, write-back package) from the emulated fleet file, so the whole
report-and-clear sequence, its refusals and its outages can run end to end. A real connector
plugs in by consuming the same queue with the same message models.
"""

from services.authority_sim.service import (
    inject_faults,
    issued_packages,
    run_authority,
    run_authority_sim,
    seed_from_fleet,
    set_declaration,
)

__all__ = [
    "inject_faults",
    "issued_packages",
    "run_authority",
    "run_authority_sim",
    "seed_from_fleet",
    "set_declaration",
]
