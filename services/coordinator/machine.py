"""The per-device clear sequence as a pure state machine (no I/O).

Steps run in contract order; each step's effect is idempotent on the device and at the
bureau, so a crash anywhere resumes at the step after the last one persisted and never
reports or writes back twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shared.errors import ErrorCode
from shared.messages.clear import STEPS, Step
from shared.messages.device import DeviceInfo

CLEARED = 2

# steps a cancelled request skips (from the write-back on, there is no undo)
STEPS_BEFORE_WRITEBACK = frozenset({Step.PRECHECKED, Step.BACKED_UP, Step.OFFLINE_UPLOADED,
                                    Step.REPORTED, Step.DECLARATION_CHECKED})


def next_step(step: Step) -> Step | None:
    """The step after `step`, or None after the last."""
    index = STEPS.index(step)
    return STEPS[index + 1] if index + 1 < len(STEPS) else None


class Gate(Enum):
    """What comes before a step runs."""

    RUN = "run"
    SKIP = "skip"  # the request was cancelled: the device ends `skipped`
    # record the write-back intent first; its transaction checks the cancellation again (it is
    # serialized with a cancel), and a cancelled request ends `skipped` there
    BEGIN_WRITEBACK = "begin_writeback"


def gate(step: Step, *, cancelled: bool, writeback_begun: bool) -> Gate:
    """Cancellation and the write-back intent: what must happen before `step` runs."""
    if writeback_begun:
        return Gate.RUN  # committed to the write-back: a cancel no longer stops the device
    if step is Step.WRITTEN_BACK:
        return Gate.BEGIN_WRITEBACK
    if cancelled and step in STEPS_BEFORE_WRITEBACK:
        return Gate.SKIP
    return Gate.RUN


@dataclass(frozen=True)
class Proceed:
    types: tuple[str, ...]  # the invoice types this clear reports and writes back


@dataclass(frozen=True)
class AlreadyCleared:
    pass


@dataclass(frozen=True)
class Refuse:
    code: ErrorCode
    message: str


Decision = Proceed | AlreadyCleared | Refuse


def decide_after_precheck(info: DeviceInfo, period: str, requested: tuple[str, ...]) -> Decision:
    """What to do with a device, from what it says about itself."""
    if info.open_period > period:
        return AlreadyCleared()  # the device has moved past that period: it was cleared
    if info.open_period < period:
        return Refuse(ErrorCode.NOT_IN_REPORTING_WINDOW,
                      f"The device still holds period {info.open_period} open; clear that period first.")
    held = tuple(t for t in info.types if not requested or t in requested)
    if not held:
        return Refuse(ErrorCode.INVALID_REQUEST,
                      f"The device holds none of the invoice types {', '.join(requested)}.")
    pending = tuple(t for t in held if info.types[t] != CLEARED)
    if not pending:
        return AlreadyCleared()
    today = info.clock[:10]
    window = info.monitoring
    if not (window.report_window_start <= today <= window.report_window_end):
        return Refuse(
            ErrorCode.NOT_IN_REPORTING_WINDOW,
            f"The device date {today} is outside the reporting window "
            f"{window.report_window_start} to {window.report_window_end} for period {period}.",
        )
    return Proceed(pending)


def remaining_after_writeback(info: DeviceInfo, period: str, types: tuple[str, ...]) -> tuple[str, ...]:
    """Types still awaiting their write-back (a resumed clear skips what is already applied)."""
    if info.open_period > period:
        return ()
    return tuple(t for t in types if info.types.get(t) != CLEARED)
