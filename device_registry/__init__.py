"""The device registry: which devices the product drives, for whom, and with which PIN.

It owns `device_enrolments` and the rows of `devices` (one per enrolled device in service);
gateways own what they see of the hardware (`device_sightings` and the state columns of
`devices`). See docs/device-registry.md for who writes and who reads what.
"""

from device_registry.enrolment import HEADER, CsvRow, Enrolment, ImportRefused, RowError, read_rows
from device_registry.pins import PinVault
from device_registry.registry import AuditEntry, AuditSink, BusAudit, Registry, unknown_words

__all__ = [
    "HEADER",
    "AuditEntry",
    "AuditSink",
    "BusAudit",
    "CsvRow",
    "Enrolment",
    "ImportRefused",
    "PinVault",
    "Registry",
    "RowError",
    "read_rows",
    "unknown_words",
]
