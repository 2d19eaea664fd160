"""The tax calendar file, the shipped published calendar and the one set of thresholds."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from shared.config import Settings
from shared.deadlines import Thresholds
from shared.tax_calendar import DEFAULT, CalendarError, load_calendar, parse_calendar, shipped


def test_unset_means_the_15th_and_a_calendar_moves_listed_periods() -> None:
    assert DEFAULT.deadline("2026-10") == date(2026, 11, 15) and DEFAULT.window("2026-12") == (
        date(2027, 1, 1), date(2027, 1, 15))
    calendar = parse_calendar('[deadlines]\n"2026-10" = "2026-11-16"\n"2026-09" = 2026-10-26\n')
    assert calendar.lock_date("2026-10") == date(2026, 11, 16)
    assert calendar.deadline("2026-09") == date(2026, 10, 26)  # a TOML date works as well as a string
    assert calendar.next_lock_date("2026-09") == date(2026, 11, 16)
    assert calendar.deadline("2026-11") == date(2026, 12, 15)  # not listed: the 15th


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[deadlines]\n"2026-10" = "2026-11-16"\n"2026-13" = "2027-01-15"\n', 3, "not a period"),
    ('[deadlines]\n"2026-10" = "2026-11-16"\n\n"2026-11" = "2026-11-30"\n', 4, "falls due in 2026-12"),
    ('[deadlines]\n"2026-10" = "16 Nov"\n', 2, "not a date"),
    ('[deadlines]\n"2026-10" = 2026-11-16T00:00:00\n', 2, "not a date and time"),
    ('[deadlines]\n"2026-10" = "2026-11-16"\n[holidays]\nx = 1\n', 3, "unknown key 'holidays'"),
])
def test_a_bad_calendar_is_an_error_naming_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(CalendarError, match=rf"cal\.toml, line {line}: .*{words}"):
        parse_calendar(text, "cal.toml")


def test_not_toml_or_no_deadlines_is_refused() -> None:
    with pytest.raises(CalendarError, match="not valid TOML"):
        parse_calendar("[deadlines\n", "cal.toml")
    with pytest.raises(CalendarError, match=r"no \[deadlines\]"):
        parse_calendar('[calendar]\nname = "x"\n', "cal.toml")


def test_the_shipped_2026_calendar_names_its_source() -> None:
    assert "cn-2026" in shipped()
    calendar = load_calendar("cn-2026")
    assert calendar.source is not None and "税总办征科函〔2025〕64号" in calendar.source
    assert len(calendar.deadlines) == 12
    assert {p: d.isoformat() for p, d in calendar.moved().items()} == {
        "2025-12": "2026-01-20", "2026-01": "2026-02-24", "2026-02": "2026-03-16", "2026-03": "2026-04-20",
        "2026-04": "2026-05-22", "2026-07": "2026-08-17", "2026-09": "2026-10-26", "2026-10": "2026-11-16"}


def test_every_command_refuses_a_bad_calendar_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "calendar.toml"
    bad.write_text('[deadlines]\n"2026-10" = "2026-11-16"\n"2026-11" = "2026-13-01"\n', encoding="utf-8")
    with pytest.raises(CalendarError, match="line 3"):
        Settings.from_env({"CLEARCARD_TAX_CALENDAR": str(bad)})
    with pytest.raises(CalendarError, match="cannot read the tax calendar"):
        Settings.from_env({"CLEARCARD_TAX_CALENDAR": str(tmp_path / "missing.toml")})
    run = subprocess.run([sys.executable, "-m", "clearcard", "status", "--json"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CLEARCARD_TAX_CALENDAR": str(bad),
                              "CLEARCARD_DATA_DIR": str(tmp_path / "data"),
                              # rich wraps long paths at the terminal width (80 without a terminal)
                              "COLUMNS": "500"}, timeout=60, check=False)
    assert run.returncode == 2 and "line 3" in run.stderr and run.stdout == "", run


def test_colours_and_escalation_levels_are_one_set_of_thresholds() -> None:
    t = Thresholds()
    for days in range(-3, 40):
        level = t.level(days)
        assert t.risk(days) == {"critical": "red", "warning": "amber", None: "green"}[level]
    assert (t.level(5), t.level(6), t.level(2), t.level(3)) == ("warning", None, "critical", "warning")
    assert t.risk(1, cleared=True) == "green" and t.risk(None) == "unknown"
    moved = Thresholds.from_env({"CLEARCARD_LOCK_WARNING_DAYS": "7", "CLEARCARD_LOCK_CRITICAL_DAYS": "3"})
    assert (moved.risk(7), moved.risk(3), moved.level(7), moved.level(3)) == ("amber", "red", "warning", "critical")
    with pytest.raises(ValueError):
        Thresholds.from_env({"CLEARCARD_LOCK_WARNING_DAYS": "2", "CLEARCARD_LOCK_CRITICAL_DAYS": "2"})


def test_abandoned_after_about_90_days_without_a_report() -> None:
    t = Thresholds()
    today = date(2026, 11, 3)
    assert not t.abandoned(date(2026, 8, 5), "2026-10", today)  # 90 days: not yet
    assert t.abandoned(date(2026, 8, 4), "2026-10", today)
    assert t.abandoned(None, "2026-07", today) and not t.abandoned(None, "2026-10", today)  # by the open period
    assert t.risk(-100, abandoned=True) == "abandoned"
