"""Commands to the device gateway and its replies (internal; routing key gateway.<gateway>.<op>).

Every command names one device; the gateway runs commands for one device one at a time, in
arrival order. PINs never travel in messages: the gateway holds the PIN on record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from shared.messages.base import DeviceId, FromOutside, Frozen, InvoiceType, Period

TypeStatus = Literal[0, 1, 2]  # 0 needs reporting, 1 reported awaiting write-back, 2 cleared


class DeviceCommand(Frozen):
    """Base of every gateway command."""

    device_id: DeviceId
    request_id: str | None = None  # for logs and audit only


class PeriodCommand(DeviceCommand):
    period: Period
    invoice_types: list[InvoiceType] = Field(default_factory=list)  # empty = every type held


class ReportStageCommand(PeriodCommand):
    """`report_stage`; `offline_sent`: the offline invoices of an earlier stage reached the bureau,
    so the device reports at once (it refuses to while any are still pending)."""

    offline_sent: bool = False


class Monitoring(FromOutside):
    """The bureau's monitoring data (监控管理数据) as the device holds it."""

    lock_date: str  # 开票截止日期, YYYY-MM-DD
    report_window_start: str  # 数据报送起始日期
    report_window_end: str  # 数据报送终止日期
    latest_report_date: str | None = None  # 最新报税日期
    upload_deadline: str  # 上传截止日期
    single_invoice_limit: str  # 单张发票限额 (yuan, decimal string)
    positive_cumulative_limit: str
    negative_cumulative_limit: str
    offline_hours_limit: int
    offline_amount_limit: str


class DeviceInfo(FromOutside):
    """Reply to `info` and `precheck`: what the device says about itself right now."""

    device_id: str
    family: str
    taxpayer_id: str
    machine_no: int
    clock: str  # device clock, ISO 8601 with offset
    open_period: str  # the period the device holds open for reporting, YYYY-MM
    types: dict[str, TypeStatus]  # invoice type code -> status
    offline_pending: int
    pin_tries_left: int
    monitoring: Monitoring


# Bounded fields keep a full page of invoices under the bus's 64 KiB message limit
# (MAX_PAGE_INVOICES below; tests/shared/test_messages.py encodes the largest possible page).
InvoiceCode = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{1,20}$")]
Money = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,15}(\.[0-9]{1,2})?$")]
Instant = Annotated[str, StringConstraints(pattern=r"^[0-9T:.+\-Z ]{10,35}$")]
# Where the next page starts: the device's own token (printable ASCII), passed back unread.
Cursor = Annotated[str, StringConstraints(pattern=r"^[ -~]{1,64}$")]


class Invoice(FromOutside):
    invoice_type: InvoiceType
    code: InvoiceCode  # 发票代码
    number: InvoiceCode  # 发票号码
    issued_at: Instant
    amount: Money  # yuan, decimal string; negative for red-letter (negative) invoices
    tax: Money
    kind: Literal["normal", "negative", "void"] = "normal"
    offline: bool = False


class TypeSummary(FromOutside):
    """The signed period summary (抄税) of one invoice type."""

    invoice_type: str
    period: str
    opening_stock: int
    bought: int
    closing_stock: int
    normal_count: int
    normal_amount: str
    normal_tax: str
    negative_count: int
    negative_amount: str
    negative_tax: str
    void_count: int
    signature: str  # hex; the device's signature over the summary


class PeriodHeader(FromOutside):
    """Reply to `read_period`: the device's period without its invoices (they come in pages).

    `invoice_counts` is how many invoices each type holds in the period: the pages of
    `read_invoices` must add up to exactly that.
    """

    info: DeviceInfo
    summaries: list[TypeSummary]  # as they would be reported (not signed if not yet reported)
    invoice_counts: dict[str, Annotated[int, Field(ge=0)]]


# Invoices per `read_invoices` page: one device command each; a page stays one bus message.
PAGE_INVOICES = 200
MAX_PAGE_INVOICES = 200


class InvoicePageCommand(DeviceCommand):
    """`read_invoices`: one page of one type's invoices of a period, in (code, number) order."""

    period: Period
    invoice_type: InvoiceType
    cursor: Cursor | None = None  # None: the first page
    limit: int = Field(default=PAGE_INVOICES, ge=1, le=MAX_PAGE_INVOICES)


class InvoicePage(FromOutside):
    """Reply to `read_invoices`; `next_cursor` is None after the type's last page."""

    invoice_type: str
    invoices: list[Invoice] = Field(max_length=MAX_PAGE_INVOICES)
    next_cursor: Cursor | None = None


class OfflineUpload(FromOutside):
    """Reply to `upload_offline`: the invoices issued offline, now marked uploaded on the device."""

    device_id: str
    invoices: list[Invoice]


class ReportReply(FromOutside):
    """Reply to `report`: one signed summary per type now in status 1 (or already reported)."""

    device_id: str
    summaries: list[TypeSummary]


class ReportStage(FromOutside):
    """Reply to `report_stage`: UPLOAD_OFFLINE, then (only when nothing was pending) REPORT and
    CHALLENGE, in one turn of the device.

    Invoices issued offline must reach the bureau before the device's summary does, so when
    `offline` holds any (the period's offline invoices, uploaded now or before: the device
    answers them all, which keeps UPLOAD_OFFLINE retryable) the device stopped there:
    `summaries` and `challenge` are None, and the caller sends them to the bureau and asks
    again with `offline_sent`.
    """

    device_id: str
    offline: list[Invoice]  # uploaded by this command (marked uploaded on the device)
    summaries: list[TypeSummary] | None = None  # as `report` answers them
    challenge: str | None = None  # as `challenge` answers it


class Challenge(FromOutside):
    """Reply to `challenge`: a random value the next write-back package must carry."""

    device_id: str
    challenge: str


class WritebackPackage(FromOutside):
    """The bureau's ciphertext package (反写监控), checked by the device before it applies it."""

    package_id: str
    device_id: str
    taxpayer_id: str
    machine_no: int
    period: str
    invoice_types: list[str]
    issued_at: str  # bureau time, ISO 8601
    challenge: str
    next_lock_date: str  # YYYY-MM-DD
    clock_block: str | None = None  # tax control disks: clock calibration, written first
    ciphertext: str  # hex
    checksum: str  # hex


class WritebackCommand(DeviceCommand):
    package: WritebackPackage


class WritebackReply(FromOutside):
    device_id: str
    applied: list[str]  # types cleared by this package now
    already: list[str]  # types this package had already cleared (a repeat is not applied twice)
    lock_date: str
    # the device read back after the write-back (INFO); None when that read failed
    info: DeviceInfo | None = None


# The emulated cabinet's operator controls (gateway.<id>.emulator_<op>), answered by a gateway
# driving emulated devices (CLEARCARD_FLEET): the console asks instead of writing the state files.


class EmulatorState(Frozen):
    """`emulator_show`: the emulated device's full state (device_gateway/emulator/admin.py)."""

    state: dict[str, Any]


class EmulatorDone(Frozen):
    """`emulator_plug` / `emulator_unplug`: done."""

    device_id: str
    done: str
