"""Text from devices and the bureau is cleaned and bounded before anything stores or publishes it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ClearCardError, ErrorCode
from shared.messages.clear import Error
from shared.messages.device import DeviceInfo
from shared.text import MESSAGE_LIMIT, clean_text, clean_tree

UNSAFE = {chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))}


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=3000),
       st.integers(min_value=1, max_value=2000))
def test_cleaned_text_has_nothing_postgresql_or_a_terminal_refuses_and_fits(value: str, limit: int) -> None:
    cleaned = clean_text(value, limit)
    assert len(cleaned) <= limit
    assert not UNSAFE & set(cleaned)
    cleaned.encode("utf-8")  # no lone surrogates
    assert "\x00" not in json.dumps(cleaned, ensure_ascii=False)


def test_clean_text_keeps_what_is_fine_and_marks_what_is_not() -> None:
    assert clean_text("锁死 2026-11-15\n\tline two") == "锁死 2026-11-15\n\tline two"
    assert clean_text("PIN\x00wrong\x1b[31m") == "PIN\ufffdwrong\ufffd[31m"
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("x" * 50, 10) == "x" * 9 + "…"


def test_device_replies_error_messages_and_trees_are_cleaned_where_they_enter() -> None:
    info = DeviceInfo.model_validate({
        "device_id": "661500000011", "family": "ukey\x00", "taxpayer_id": "91420100MA4K0001XK", "machine_no": 0,
        "clock": "2026-11-03T09:00:00+08:00", "open_period": "2026-10", "types": {"004": 0},
        "offline_pending": 0, "pin_tries_left": 5,
        "monitoring": {"lock_date": "2026-11-15\x00", "report_window_start": "2026-11-01",
                       "report_window_end": "2026-11-15", "upload_deadline": "2026-11-15",
                       "single_invoice_limit": "x" * 100_000, "positive_cumulative_limit": "0",
                       "negative_cumulative_limit": "0", "offline_hours_limit": 0, "offline_amount_limit": "0"}})
    assert info.family == "ukey\ufffd" and info.monitoring.lock_date == "2026-11-15\ufffd"
    assert len(info.monitoring.single_invoice_limit) == 16 * 1024
    error = ClearCardError(ErrorCode.DEVICE_BUSY, "busy (device said: \x00\x00" + "y" * 5000 + ")")
    assert "\x00" not in error.message and len(error.message) == MESSAGE_LIMIT
    assert Error(code=ErrorCode.INTERNAL, message="bad\x00").message == "bad\ufffd"
    assert clean_tree({"k\x00": ["v\x00", 1, None]}) == {"k\ufffd": ["v\ufffd", 1, None]}
