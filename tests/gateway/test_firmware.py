"""The emulated firmware's rules, one test per failure row of domain.md and the happy path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from gateway_helpers import TAXPAYER_A, TAXPAYER_B, device_toml, fleet_toml, sealed_package

from device_gateway.emulator.device_rules import is_locked, type_status
from device_gateway.emulator.firmware import run_command
from device_gateway.emulator.state import DeviceState, seed_state
from device_gateway.protocol import Command, Status
from shared.fleet import parse_fleet

SEED_WALL = datetime(2026, 1, 1, tzinfo=UTC)  # the real time when the device was seeded
DEVICE = "661500000001"


def make(**fields: Any) -> DeviceState:
    fleet = parse_fleet(fleet_toml(device_toml(DEVICE, **fields)))
    return seed_state(fleet.devices[0], fleet.clock, SEED_WALL)


def at(hours: float = 0) -> datetime:
    """Wall time `hours` after seeding (the device clock starts at the fleet clock, 2026-11-03 09:00)."""
    return SEED_WALL + timedelta(hours=hours)


def run(state: DeviceState, command: Command, request: dict[str, Any] | None = None,
        hours: float = 0) -> tuple[Status, dict[str, Any]]:
    outcome = run_command(state, command, request or {}, at(hours), random_bytes=lambda n: b"\x07" * n)
    return outcome.status, outcome.body


def report(state: DeviceState, hours: float = 0, **extra: Any) -> tuple[Status, dict[str, Any]]:
    return run(state, Command.REPORT, {"period": state.open_period, **extra}, hours)


def clear(state: DeviceState, types: list[str] | None = None, hours: float = 0,
          **package: Any) -> tuple[Status, dict[str, Any]]:
    status, body = run(state, Command.CHALLENGE, hours=hours)
    assert status is Status.OK
    fields: dict[str, Any] = {"period": "2026-10", "invoice_types": types or list(state.invoice_types),
                              "challenge": body["challenge"]}
    fields.update(package)
    pkg = sealed_package(state.device_id, state.taxpayer_id, **fields)
    return run(state, Command.WRITEBACK, pkg, hours)


def test_seeded_device_starts_at_fleet_clock_plus_skew_and_runs_in_real_time() -> None:
    state = make(clock_skew_seconds=120)
    status, info = run(state, Command.INFO, hours=2)
    assert status is Status.OK
    assert info["clock"].startswith("2026-11-03T11:02:00")
    assert info["monitoring"]["report_window_start"] == "2026-11-01"
    assert info["monitoring"]["lock_date"] == "2026-11-15"
    assert info["types"] == {"004": 0, "007": 0}


def test_full_clear_moves_lock_date_and_opens_the_next_period() -> None:
    state = make()
    status, body = report(state)
    assert status is Status.OK
    assert [s["invoice_type"] for s in body["summaries"]] == ["004", "007"]
    assert all(len(s["signature"]) == 64 for s in body["summaries"])
    status, body = clear(state, package_id="pkg-1")
    assert status is Status.OK, body
    assert body == {"applied": ["004", "007"], "already": [], "lock_date": "2026-12-15"}
    assert state.open_period == "2026-11"
    assert [(w.invoice_type, w.package_id) for w in state.writebacks] == [("004", "pkg-1"), ("007", "pkg-1")]
    assert [(r.invoice_type, r.period) for r in state.reports] == [("004", "2026-10"), ("007", "2026-10")]
    # cleared types wait at 2 until the next window opens on 12-01, then need reporting again
    assert type_status(state, "004", datetime(2026, 11, 20).date()) == 2
    assert type_status(state, "004", datetime(2026, 12, 1).date()) == 0


def test_report_twice_returns_the_same_summaries_and_reports_once() -> None:
    state = make()
    first = report(state)[1]["summaries"]
    status, again = report(state)
    assert status is Status.OK and again["summaries"] == first
    assert len(state.reports) == 2  # one per type, not per call


def test_package_applied_at_most_once() -> None:
    state = make()
    report(state)
    status, challenge = run(state, Command.CHALLENGE)
    pkg = sealed_package(DEVICE, TAXPAYER_A, period="2026-10", invoice_types=["004", "007"],
                         challenge=challenge["challenge"], package_id="pkg-once")
    assert run(state, Command.WRITEBACK, pkg)[1]["applied"] == ["004", "007"]
    status, body = run(state, Command.WRITEBACK, pkg)
    assert status is Status.OK
    assert body["applied"] == [] and body["already"] == ["004", "007"]
    assert len(state.writebacks) == 2


def test_second_package_for_a_cleared_type_is_not_applied_again() -> None:
    state = make(invoice_types=["004", "007"])
    report(state)
    assert clear(state, ["004"], package_id="a")[1]["applied"] == ["004"]
    status, body = clear(state, ["004", "007"], package_id="b")
    assert status is Status.OK
    assert body["applied"] == ["007"] and body["already"] == ["004"]
    assert [w.package_id for w in state.writebacks] == ["a", "b"]


def test_not_in_reporting_window_before_the_first() -> None:
    state = make(period="2026-11")  # the device clock says 2026-11-03: November is not closed
    status, body = report(state)
    assert status is Status.NOT_IN_WINDOW
    assert "2026-12-01" in body["message"]


def test_not_in_reporting_window_for_a_period_not_open() -> None:
    state = make()
    assert run(state, Command.REPORT, {"period": "2026-11"})[0] is Status.NOT_IN_WINDOW


def test_offline_invoices_block_report_until_uploaded() -> None:
    state = make(offline_pending=3)
    status, body = report(state)
    assert status is Status.OFFLINE_PENDING and "3 offline" in body["message"]
    status, body = run(state, Command.UPLOAD_OFFLINE, {"period": "2026-10"})
    assert status is Status.OK and len(body["invoices"]) == 3
    assert all(i["offline"] for i in body["invoices"])
    # uploading again answers the same invoices (retryable) and changes nothing
    assert run(state, Command.UPLOAD_OFFLINE, {"period": "2026-10"})[1]["invoices"] == body["invoices"]
    assert report(state)[0] is Status.OK


def test_writeback_before_report_is_refused_as_no_summary_reported() -> None:
    state = make()
    status, body = clear(state)
    assert status is Status.NOT_REPORTED
    assert "no summary reported" in body["message"]
    assert state.writebacks == []


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        ("checksum", "checksum"),
        ("taxpayer", "not sealed for this device"),
        ("time", "too far"),
        ("challenge", "challenge"),
        ("field", "differs"),
        ("machine", "machine number"),
    ],
)
def test_writeback_rejected(tamper: str, words: str) -> None:
    state = make()
    report(state)
    status, body = run(state, Command.CHALLENGE)
    fields: dict[str, Any] = {"period": "2026-10", "invoice_types": ["004", "007"],
                              "challenge": body["challenge"]}
    if tamper == "taxpayer":
        pkg = sealed_package(DEVICE, TAXPAYER_B, **fields, key_for=(DEVICE, TAXPAYER_B))
    elif tamper == "time":
        pkg = sealed_package(DEVICE, TAXPAYER_A, **fields, issued_at="2026-11-05T09:00:01+08:00")
    elif tamper == "challenge":
        pkg = sealed_package(DEVICE, TAXPAYER_A, **{**fields, "challenge": "00" * 16})
    elif tamper == "machine":
        pkg = sealed_package(DEVICE, TAXPAYER_A, **fields, machine_no=1)
    else:
        pkg = sealed_package(DEVICE, TAXPAYER_A, **fields)
        if tamper == "checksum":
            pkg["ciphertext"] = ("ff" if pkg["ciphertext"][:2] != "ff" else "00") + pkg["ciphertext"][2:]
        else:
            pkg["invoice_types"] = ["004"]
    status, body = run(state, Command.WRITEBACK, pkg)
    assert status is Status.WRITEBACK_REJECTED, body
    assert words in body["message"]
    assert state.writebacks == [] and all(t.status == 1 for t in state.types.values())


def test_challenge_is_consumed_by_use() -> None:
    state = make()
    report(state)
    challenge = run(state, Command.CHALLENGE)[1]["challenge"]
    bad = sealed_package(DEVICE, TAXPAYER_A, period="2026-10", invoice_types=["004"], challenge="11" * 16)
    assert run(state, Command.WRITEBACK, bad)[0] is Status.WRITEBACK_REJECTED
    good = sealed_package(DEVICE, TAXPAYER_A, period="2026-10", invoice_types=["004"], challenge=challenge)
    assert run(state, Command.WRITEBACK, good)[0] is Status.WRITEBACK_REJECTED  # no replay after use


@pytest.mark.parametrize(("skew", "abnormal"), [(-3601, True), (-3600, False), (86400, False), (86401, True)])
def test_clock_abnormal_thresholds(skew: int, abnormal: bool) -> None:
    state = make(clock_skew_seconds=skew)
    _status, info = run(state, Command.INFO)
    assert info["clock_abnormal"] is abnormal
    assert (report(state)[0] is Status.CLOCK_ABNORMAL) is abnormal


def test_wrong_pin_costs_one_try_and_zero_tries_locks() -> None:
    state = make(pin_tries_left=2)
    status, body = run(state, Command.VERIFY_PIN, {"pin": "00000000"})
    assert status is Status.PIN_INVALID and body["pin_tries_left"] == 1
    assert "00000000" not in body["message"]
    assert run(state, Command.VERIFY_PIN, {"pin": "12345678"})[0] is Status.OK
    assert state.pin_tries_left == 1
    assert run(state, Command.VERIFY_PIN, {"pin": "00000000"})[0] is Status.PIN_LOCKED
    assert state.pin_tries_left == 0
    # locked: even the right PIN is refused, and nothing else works but INFO
    assert run(state, Command.VERIFY_PIN, {"pin": "12345678"})[0] is Status.PIN_LOCKED
    assert report(state)[0] is Status.PIN_LOCKED
    assert run(state, Command.INFO)[0] is Status.OK


def test_device_locked_past_its_lock_date() -> None:
    state = make()
    days_to_16th = (datetime(2026, 11, 16, 0, 0, 1) - datetime(2026, 11, 3, 9)).total_seconds() / 3600
    assert not is_locked(state, datetime(2026, 11, 15).date())
    _status, info = run(state, Command.INFO, hours=days_to_16th)
    assert info["locked"] is True
    assert report(state, hours=days_to_16th)[0] is Status.DEVICE_LOCKED


def test_tax_control_disk_needs_the_clock_block_first() -> None:
    state = make(family="tax_control_disk")
    report(state)
    block = "2026-11-03T09:10:00+08:00"
    status, body = clear(state, clock_block=block)
    assert status is Status.WRITEBACK_REJECTED and "clock calibration" in body["message"]
    assert run(state, Command.WRITE_CLOCK, {"clock_block": block})[0] is Status.OK
    status, body = clear(state, clock_block=block)
    assert status is Status.OK and body["applied"] == ["004", "007"]


def test_clock_block_cannot_move_the_clock_backwards() -> None:
    state = make()
    status, _body = run(state, Command.WRITE_CLOCK, {"clock_block": "2026-11-03T07:00:00+08:00"})
    assert status is Status.CLOCK_ABNORMAL


def test_clock_block_moves_a_slow_clock_forwards() -> None:
    state = make(clock_skew_seconds=-7200)
    assert run(state, Command.WRITE_CLOCK, {"clock_block": "2026-11-03T09:00:00+08:00"})[0] is Status.OK
    assert run(state, Command.INFO)[1]["clock_abnormal"] is False


@pytest.mark.parametrize(
    ("command", "request_body"),
    [
        (Command.REPORT, {}),
        (Command.REPORT, {"period": 202610}),
        (Command.REPORT, {"period": "2026-13"}),
        (Command.READ_PERIOD, {"period": "2026-10", "invoice_types": ["999"]}),
        (Command.VERIFY_PIN, {"pin": 1234}),
        (Command.WRITEBACK, {"package_id": "x"}),
        (Command.WRITE_CLOCK, {"clock_block": "yesterday"}),
    ],
)
def test_malformed_requests_are_refused_without_change(command: Command, request_body: dict[str, Any]) -> None:
    state = make()
    before = state.model_dump()
    status, body = run(state, command, request_body)
    assert status is Status.BAD_REQUEST and body["message"]
    assert state.model_dump() == before


def test_unknown_command() -> None:
    assert run_command(make(), 0x55, {}, at()).status is Status.UNKNOWN_COMMAND


def _all_pages(state: DeviceState, invoice_type: str, limit: int = 200) -> list[dict[str, Any]]:
    invoices, cursor = [], None
    while True:
        status, page = run(state, Command.READ_INVOICES,
                           {"period": "2026-10", "invoice_type": invoice_type, "cursor": cursor, "limit": limit})
        assert status is Status.OK and page["invoice_type"] == invoice_type
        assert len(page["invoices"]) <= limit
        invoices += page["invoices"]
        cursor = page["next_cursor"]
        if cursor is None:
            return invoices


def test_read_period_summaries_signed_only_once_reported() -> None:
    state = make(invoices_per_type=10)
    status, data = run(state, Command.READ_PERIOD, {"period": "2026-10"})
    assert status is Status.OK
    assert "invoices" not in data and data["invoice_counts"] == {"004": 10, "007": 10}
    assert all(s["signature"] == "" for s in data["summaries"])
    summary = data["summaries"][0]
    assert summary["normal_count"] + summary["negative_count"] + summary["void_count"] == 10
    assert summary["closing_stock"] == summary["opening_stock"] + summary["bought"] - 10
    report(state)
    data = run(state, Command.READ_PERIOD, {"period": "2026-10"})[1]
    assert all(len(s["signature"]) == 64 for s in data["summaries"])


def test_invoices_are_deterministic_per_device() -> None:
    one = _all_pages(make(), "004")
    two = _all_pages(make(), "004")
    assert one == two and len(one) == 5
    assert all(isinstance(i["amount"], str) and "." in i["amount"] for i in one)


def test_pages_cover_the_period_in_number_order_and_add_up_to_the_summary() -> None:
    state = make(invoices_per_type=1234, offline_pending=7)
    header = run(state, Command.READ_PERIOD, {"period": "2026-10"})[1]
    assert header["invoice_counts"] == {"004": 1241, "007": 1234}  # offline ones are the first type's
    for summary in header["summaries"]:
        invoices = _all_pages(state, summary["invoice_type"], limit=97)
        assert len(invoices) == header["invoice_counts"][summary["invoice_type"]]
        numbers = [int(i["number"]) for i in invoices]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        kinds = [i["kind"] for i in invoices]
        assert kinds.count("normal") == summary["normal_count"]
        assert kinds.count("negative") == summary["negative_count"] and kinds.count("void") == summary["void_count"]
        normal = sum(Decimal(i["amount"]) for i in invoices if i["kind"] == "normal")
        negative = sum(Decimal(i["amount"]) for i in invoices if i["kind"] == "negative")
        assert str(normal) == summary["normal_amount"] and str(negative) == summary["negative_amount"]
    assert sum(i["offline"] for i in _all_pages(state, "004")) == 7


def test_a_page_is_one_small_answer_whatever_the_period_holds() -> None:
    state = make(invoices_per_type=100_000)
    status, page = run(state, Command.READ_INVOICES,
                       {"period": "2026-10", "invoice_type": "007", "cursor": "99950", "limit": 200})
    assert status is Status.OK and len(page["invoices"]) == 50 and page["next_cursor"] is None
    first = run(state, Command.READ_INVOICES, {"period": "2026-10", "invoice_type": "007", "limit": 1})[1]
    assert int(page["invoices"][0]["number"]) == int(first["invoices"][0]["number"]) + 99_950


@pytest.mark.parametrize("request_body", [
    {"period": "2026-10", "invoice_type": "004", "cursor": "abc"},
    {"period": "2026-10", "invoice_type": "004", "limit": 0},
    {"period": "2026-10", "invoice_type": "004", "limit": 201},
    {"period": "2026-10", "invoice_type": "005"},
    {"period": "2026-10"},
])
def test_bad_page_requests_are_refused(request_body: dict[str, Any]) -> None:
    status, body = run(make(), Command.READ_INVOICES, request_body)
    assert status is Status.BAD_REQUEST and body["message"]


def test_a_closed_period_keeps_its_offline_invoices() -> None:
    state = make(offline_pending=3)
    before = run(state, Command.READ_PERIOD, {"period": "2026-10"})[1]
    assert run(state, Command.UPLOAD_OFFLINE, {"period": "2026-10"})[0] is Status.OK
    assert report(state)[0] is Status.OK
    assert clear(state)[0] is Status.OK and state.open_period == "2026-11"
    after = run(state, Command.READ_PERIOD, {"period": "2026-10"})[1]
    assert after["invoice_counts"] == before["invoice_counts"] == {"004": 8, "007": 5}
    assert len(_all_pages(state, "004")) == 8
