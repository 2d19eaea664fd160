"""Command and status codes of the ClearCard reference device protocol, and which commands retry."""

from __future__ import annotations

from enum import IntEnum


class Command(IntEnum):
    """What the host asks the device to do (one byte on the wire)."""

    INFO = 0x01
    VERIFY_PIN = 0x02
    READ_PERIOD = 0x03
    UPLOAD_OFFLINE = 0x04
    REPORT = 0x05
    CHALLENGE = 0x06
    WRITE_CLOCK = 0x07
    WRITEBACK = 0x08
    READ_INVOICES = 0x09  # one page of one type's invoices of a period


class Status(IntEnum):
    """The device's answer code (one byte on the wire); OK carries the reply payload."""

    OK = 0x00
    BAD_REQUEST = 0x01
    UNKNOWN_COMMAND = 0x02
    PIN_INVALID = 0x10
    PIN_LOCKED = 0x11
    DEVICE_LOCKED = 0x12
    CLOCK_ABNORMAL = 0x13
    OFFLINE_PENDING = 0x14
    NOT_IN_WINDOW = 0x15
    NOT_REPORTED = 0x16
    WRITEBACK_REJECTED = 0x17
    BUSY = 0x20
    FAULT = 0x7F


# Reads and idempotent requests: safe to send again after a lost or garbled reply.
RETRYABLE: frozenset[Command] = frozenset(
    {Command.INFO, Command.READ_PERIOD, Command.READ_INVOICES, Command.UPLOAD_OFFLINE,
     Command.CHALLENGE}
)

# Never sent twice automatically: a repeated PIN burns a try, a repeated report or write-back
# or clock write changes the device again. Whoever sent it must look at the device first.
NEVER_RETRY: frozenset[Command] = frozenset(
    {Command.VERIFY_PIN, Command.REPORT, Command.WRITE_CLOCK, Command.WRITEBACK}
)

assert frozenset(Command) == RETRYABLE | NEVER_RETRY and not RETRYABLE & NEVER_RETRY


def is_retryable(command: Command) -> bool:
    """True if a command may be sent again when its reply was lost."""
    return command in RETRYABLE
