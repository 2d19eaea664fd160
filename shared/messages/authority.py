"""Commands to the bureau (authority simulator or a real connector); routing key authority.<op>."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.base import DeviceId, FromOutside, Frozen, Period
from shared.messages.device import Invoice, TypeSummary, WritebackPackage

MAX_BATCH = 200  # devices per batched status query: well under the 64 KiB message limit


class OfflineInvoicesUpload(Frozen):
    """`upload_offline`: invoices issued offline reach the bureau."""

    device_id: DeviceId
    taxpayer_id: str
    period: Period
    invoices: list[Invoice]


class ReportSubmission(Frozen):
    """`submit_report`: the device's signed summaries (上报汇总)."""

    device_id: DeviceId
    taxpayer_id: str
    machine_no: int
    period: Period
    summaries: list[TypeSummary]


class Accepted(FromOutside):
    accepted: int  # how many items the bureau took (a repeat is accepted again, not duplicated)


class DeclarationQuery(Frozen):
    """`declaration_status`: has the taxpayer filed, and did the comparison pass?"""

    taxpayer_id: str
    period: Period
    device_id: DeviceId


class DeclarationStatus(FromOutside):
    declared: bool
    comparison: Literal["pass", "fail", "pending"]


class DeclarationBatchQuery(Frozen):
    """`declaration_statuses`: filing and comparison of many devices at once (scheduled refresh)."""

    queries: list[DeclarationQuery] = Field(min_length=1, max_length=MAX_BATCH)


class DeclarationItem(Frozen):
    device_id: DeviceId
    period: Period
    declared: bool
    comparison: Literal["pass", "fail", "pending"]


class DeclarationBatch(FromOutside):
    statuses: list[DeclarationItem]


class PackageRequest(Frozen):
    """`writeback_package`: ask for the clear package bound to the device's challenge."""

    device_id: DeviceId
    taxpayer_id: str
    machine_no: int
    family: str
    period: Period
    invoice_types: list[str]
    challenge: str


class PackageReply(FromOutside):
    package: WritebackPackage


class ClearanceRequest(Frozen):
    """`clearance`: the report, then the filing and comparison, then the package, in one call.

    The bureau takes the report first, so a refusal later (not filed, comparison pending or
    failed) still leaves the summary reported; `challenge`, `family` and `invoice_types` are as
    in `writeback_package`.
    """

    report: ReportSubmission
    family: str
    invoice_types: list[str]
    challenge: str


class Clearance(FromOutside):
    """Reply to `clearance`: which parts completed. None is "ask on its own" (the bureau could
    not answer that part now), or for `package` also "not issued" (not filed, or not passed)."""

    accepted: int  # summaries taken: the report is in
    status: DeclarationStatus | None = None
    package: WritebackPackage | None = None
