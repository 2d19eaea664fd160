"""The contract's stable error codes, with words a finance operator can act on."""

from __future__ import annotations

from enum import StrEnum

from shared.text import MESSAGE_LIMIT, clean_text


class ErrorCode(StrEnum):
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_INVALID = "AUTH_INVALID"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNKNOWN_BRANCH = "UNKNOWN_BRANCH"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"
    CONFIRMATION_REQUIRED = "CONFIRMATION_REQUIRED"
    PLAN_CHANGED = "PLAN_CHANGED"
    NOT_IN_REPORTING_WINDOW = "NOT_IN_REPORTING_WINDOW"
    DEVICE_OFFLINE = "DEVICE_OFFLINE"
    DEVICE_BUSY = "DEVICE_BUSY"
    DEVICE_PIN_INVALID = "DEVICE_PIN_INVALID"
    DEVICE_PIN_LOCKED = "DEVICE_PIN_LOCKED"
    DEVICE_LOCKED = "DEVICE_LOCKED"
    DEVICE_CLOCK_ABNORMAL = "DEVICE_CLOCK_ABNORMAL"
    OFFLINE_INVOICES_PENDING = "OFFLINE_INVOICES_PENDING"
    NOT_DECLARED = "NOT_DECLARED"
    COMPARISON_FAILED = "COMPARISON_FAILED"
    COMPARISON_PENDING = "COMPARISON_PENDING"  # an addition to contract §3: the bureau is still comparing
    WRITEBACK_REJECTED = "WRITEBACK_REJECTED"
    AUTHORITY_UNAVAILABLE = "AUTHORITY_UNAVAILABLE"
    BACKUP_FAILED = "BACKUP_FAILED"
    TIMEOUT = "TIMEOUT"
    INTERNAL = "INTERNAL"


PLAIN_WORDS: dict[ErrorCode, str] = {
    ErrorCode.AUTH_REQUIRED: "The request carried no access token. Ask for a token and send it.",
    ErrorCode.AUTH_INVALID: "The access token is not valid (forged, expired or revoked).",
    ErrorCode.PERMISSION_DENIED: "You are not allowed to do this for this branch.",
    ErrorCode.INVALID_REQUEST: "The request is incomplete or malformed.",
    ErrorCode.UNKNOWN_BRANCH: "No devices are registered for this branch.",
    ErrorCode.UNKNOWN_DEVICE: "This device is not registered for the branch.",
    ErrorCode.CONFIRMATION_REQUIRED: "A manual clear needs the confirmation value from a preview.",
    ErrorCode.PLAN_CHANGED: "What the devices hold changed since the preview; preview again.",
    ErrorCode.NOT_IN_REPORTING_WINDOW: (
        "The reporting window for this period is not open on the device "
        "(before the 1st, or the period is not closed)."
    ),
    ErrorCode.DEVICE_OFFLINE: "The device is not connected (cable, hub or USB-sharing server).",
    ErrorCode.DEVICE_BUSY: "Another command or the invoicing software is using the device.",
    ErrorCode.DEVICE_PIN_INVALID: (
        "The certificate PIN on record is wrong; one try was used. Correct the PIN before retrying."
    ),
    ErrorCode.DEVICE_PIN_LOCKED: (
        "No PIN tries are left; the device is locked until the tax office resets it."
    ),
    ErrorCode.DEVICE_LOCKED: "The device passed its lock date uncleared; the tax office must unlock it.",
    ErrorCode.DEVICE_CLOCK_ABNORMAL: "The device clock is abnormal; it cannot be moved backwards.",
    ErrorCode.OFFLINE_INVOICES_PENDING: (
        "Offline invoices are not uploaded (or offline limits are exceeded); upload them first."
    ),
    ErrorCode.NOT_DECLARED: "The VAT return for this period is not filed yet at the tax bureau.",
    ErrorCode.COMPARISON_FAILED: (
        "The bureau's comparison of the return with the reported invoices failed; "
        "fix the return or visit the tax office."
    ),
    ErrorCode.COMPARISON_PENDING: (
        "The return is filed and the invoices are reported; the bureau has not finished comparing "
        "them yet. ClearCard asks again on its schedule and clears the device once it passes."
    ),
    ErrorCode.WRITEBACK_REJECTED: (
        "The device rejected the write-back package (checksum, taxpayer id, time or challenge)."
    ),
    ErrorCode.AUTHORITY_UNAVAILABLE: "The tax bureau could not be reached; it will be retried.",
    ErrorCode.BACKUP_FAILED: "The backup could not be written or verified; nothing was written back.",
    ErrorCode.TIMEOUT: "The operation took too long and was stopped.",
    ErrorCode.INTERNAL: "An internal error occurred; the operations team has the details.",
}

# Errors worth trying again later; business refusals (PIN, comparison...) never are. The one
# transient set: every retry decision starts from it, narrowed or widened below with the reason.
TRANSIENT: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.DEVICE_BUSY,
        ErrorCode.DEVICE_OFFLINE,
        ErrorCode.AUTHORITY_UNAVAILABLE,
        ErrorCode.TIMEOUT,
    }
)
# Asked again at once, a few times with backoff (a call to the gateway, the bureau, a service;
# a backup page): an offline device does not come back within seconds, the scheduler's later
# rounds retry it instead.
RETRIED_AT_ONCE: frozenset[ErrorCode] = TRANSIENT - {ErrorCode.DEVICE_OFFLINE}
# A failed clear the scheduler starts again on its next round, until the lock date: also a
# filing the bureau has not recorded yet and a backup that could not be taken this time.
RETRIED_NEXT_ROUND: frozenset[ErrorCode] = TRANSIENT | {ErrorCode.NOT_DECLARED, ErrorCode.BACKUP_FAILED}


class ClearCardError(Exception):
    """A failure with a contract error code; `message` is for a person."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        self.code = code
        # the message often quotes a device or the bureau: it is stored and published as is
        self.message = clean_text(message or PLAIN_WORDS[code], MESSAGE_LIMIT)
        super().__init__(f"{code}: {self.message}")

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT


class ConfigurationError(Exception):
    """The installation cannot start as configured; the message says what to change.

    `clearcard serve` and `clearcard demo` print it as one line and exit 2, without a traceback.
    """
