"""The pure clear-sequence rules."""

from services.coordinator.machine import (
    STEPS_BEFORE_WRITEBACK,
    AlreadyCleared,
    Gate,
    Proceed,
    Refuse,
    decide_after_precheck,
    gate,
    next_step,
    remaining_after_writeback,
)
from shared.errors import ErrorCode
from shared.messages.clear import STEPS, Step
from shared.messages.device import DeviceInfo, Monitoring


def info(
    types: dict[str, int], *, open_period: str = "2026-10", clock: str = "2026-11-03T09:00:00+08:00"
) -> DeviceInfo:
    return DeviceInfo.model_validate({
        "device_id": "661500000001", "family": "ukey", "taxpayer_id": "91420100MA4K0001XK",
        "machine_no": 0, "clock": clock, "open_period": open_period, "types": types,
        "offline_pending": 0, "pin_tries_left": 5,
        "monitoring": Monitoring(
            lock_date="2026-11-15", report_window_start="2026-11-01", report_window_end="2026-11-15",
            upload_deadline="2026-11-15", single_invoice_limit="100000.00",
            positive_cumulative_limit="1000000.00", negative_cumulative_limit="100000.00",
            offline_hours_limit=72, offline_amount_limit="100000.00"),
    })


def test_steps_follow_contract_order() -> None:
    walked = [Step.AUTHORIZED]
    while (step := next_step(walked[-1])) is not None:
        walked.append(step)
    assert tuple(walked) == STEPS


def test_pending_types_proceed() -> None:
    assert decide_after_precheck(info({"004": 0, "007": 2}), "2026-10", ()) == Proceed(("004",))
    assert decide_after_precheck(info({"004": 0, "007": 1}), "2026-10", ("007",)) == Proceed(("007",))


def test_cleared_or_past_period_is_already_cleared() -> None:
    assert decide_after_precheck(info({"004": 2}), "2026-10", ()) == AlreadyCleared()
    assert decide_after_precheck(info({"004": 0}, open_period="2026-11"), "2026-10", ()) == AlreadyCleared()


def test_outside_window_is_refused() -> None:
    early = decide_after_precheck(info({"004": 0}, clock="2026-10-31T23:59:00+08:00"), "2026-10", ())
    assert isinstance(early, Refuse) and early.code == ErrorCode.NOT_IN_REPORTING_WINDOW
    future = decide_after_precheck(info({"004": 0}), "2026-11", ())
    assert isinstance(future, Refuse) and future.code == ErrorCode.NOT_IN_REPORTING_WINDOW


def test_type_the_device_does_not_hold() -> None:
    result = decide_after_precheck(info({"004": 0}), "2026-10", ("026",))
    assert isinstance(result, Refuse) and result.code == ErrorCode.INVALID_REQUEST


def test_resumed_writeback_skips_applied_types() -> None:
    assert remaining_after_writeback(info({"004": 2, "007": 1}), "2026-10", ("004", "007")) == ("007",)
    assert remaining_after_writeback(info({"004": 0}, open_period="2026-11"), "2026-10", ("004",)) == ()


def test_a_cancel_skips_every_step_before_the_writeback_intent_and_none_after() -> None:
    for step in STEPS[1:]:
        running = gate(step, cancelled=False, writeback_begun=False)
        cancelled = gate(step, cancelled=True, writeback_begun=False)
        if step is Step.WRITTEN_BACK:  # the intent's own transaction checks the cancel again
            assert running is cancelled is Gate.BEGIN_WRITEBACK
        elif step in STEPS_BEFORE_WRITEBACK:
            assert (running, cancelled) == (Gate.RUN, Gate.SKIP)
        # committed to the write-back: nothing stops the device any more
        assert gate(step, cancelled=True, writeback_begun=True) is Gate.RUN
    assert gate(Step.VERIFIED, cancelled=True, writeback_begun=True) is Gate.RUN
