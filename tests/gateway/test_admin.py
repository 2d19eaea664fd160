"""`clearcard emulator show|plug|unplug` without a running gateway."""

from __future__ import annotations

from pathlib import Path

import pytest
from gateway_helpers import device_toml, fleet_toml, settings_for

from device_gateway.emulator.admin import plug, show_device, unplug
from shared.errors import ClearCardError, ErrorCode

UKEY = "661500000001"


def test_show_seeds_a_fleet_device_and_hides_the_pin(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, fleet_toml(device_toml(UKEY, offline_pending=4, clock_skew_seconds=60)))
    shown = show_device(settings, UKEY)
    assert shown["status"] == {"004": 0, "007": 0}
    assert shown["lock_date"] == "2026-11-15" and shown["pin_tries_left"] == 5
    assert shown["offline_pending"] == 4 and shown["writebacks"] == [] and shown["reports"] == []
    assert shown["family"] == "ukey" and shown["branch"] == "wuhan-hankou" and shown["plugged"] is True
    assert shown["clock"].startswith("2026-11-03T09:01")
    assert "12345678" not in repr(shown)
    assert (tmp_path / "emulator" / f"{UKEY}.json").exists()


def test_plug_and_unplug_use_a_marker_file(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, fleet_toml(device_toml(UKEY)))
    unplug(settings, UKEY)
    assert (tmp_path / "emulator" / f"{UKEY}.unplugged").exists()
    assert show_device(settings, UKEY)["plugged"] is False
    plug(settings, UKEY)
    assert show_device(settings, UKEY)["plugged"] is True


@pytest.mark.parametrize(("device_id", "code"), [("999999999999", ErrorCode.UNKNOWN_DEVICE),
                                                 ("../etc", ErrorCode.INVALID_REQUEST)])
def test_unknown_or_malformed_device(tmp_path: Path, device_id: str, code: ErrorCode) -> None:
    settings = settings_for(tmp_path, fleet_toml(device_toml(UKEY)))
    for action in (show_device, plug, unplug):
        with pytest.raises(ClearCardError) as caught:
            action(settings, device_id)
        assert caught.value.code is code


def test_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, None)
    (tmp_path / "emulator").mkdir()
    (tmp_path / "emulator" / f"{UKEY}.json").write_text("{not json")
    with pytest.raises(ClearCardError, match="damaged emulator state"):
        show_device(settings, UKEY)
