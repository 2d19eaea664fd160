"""The fleet file: a bad file is refused whole with the line named."""

from pathlib import Path

import pytest

from shared.fleet import FleetError, load_fleet, parse_fleet

GOOD = '''clock = "2026-11-03T09:00:00+08:00"

[[device]]
id = "661500000001"
family = "ukey"
taxpayer_id = "91420100MA4K0001XK"
branch = "wuhan-hankou"
pin = "12345678"
period = "2026-10"
invoice_types = ["004", "007", "026"]
'''


def test_good_file_with_defaults() -> None:
    fleet = parse_fleet(GOOD)
    assert fleet.clock is not None and fleet.clock.utcoffset() is not None
    (device,) = fleet.devices
    assert device.pin_on_record == "12345678"
    assert device.pin_tries_left == 5 and device.declared and device.comparison == "pass"


@pytest.mark.parametrize(
    ("bad", "line", "words"),
    [
        (GOOD.replace('"91420100MA4K0001XK"', '"91420100MA4K0001XX"'), 6, "taxpayer_id"),
        (GOOD.replace('"ukey"', '"floppy"'), 5, "family"),
        (GOOD.replace('"026"]', '"999"]'), 10, "invoice_types"),
        (GOOD + GOOD.split("\n", 2)[2], 12, "appears twice"),
    ],
)
def test_bad_files_name_the_line(bad: str, line: int, words: str) -> None:
    with pytest.raises(FleetError) as caught:
        parse_fleet(bad, "fleet.toml")
    assert f"line {line}" in str(caught.value)
    assert words in str(caught.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="cannot read"):
        load_fleet(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[device]\n")
    with pytest.raises(FleetError, match="not valid TOML"):
        load_fleet(tmp_path / "bad.toml")
