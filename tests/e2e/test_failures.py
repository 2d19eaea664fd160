"""Every failure of domain.md's table, reproduced by the emulator, through the whole system.

Each clear ends in `clear.finished` with the contract's error code and plain words; where a
rule forbids it nothing is written back, and the audit chain still verifies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from clearcard.runtime import identified
from device_gateway.emulator.admin import hold, plug, show_device, unplug
from services.audit.log import verify_chain
from shared.authz.identity import ServiceKeys
from shared.bus.rpc import RpcClient
from shared.bus.topology import COMMANDS, gateway_routing_key
from shared.errors import PLAIN_WORDS, ClearCardError, ErrorCode
from shared.messages.device import Challenge, DeviceCommand, WritebackCommand, WritebackPackage
from shared.writeback_package import emulated_device_key, seal
from tests.support.fleets import CLOCK, fleet_text, one_device
from tests.support.system import System, SystemFactory

DEVICE = "661500000001"
TAXPAYER = "91420100MA4K0001XK"


async def assert_failed(system: System, code: ErrorCode, *, device_id: str = DEVICE,
                        written_back: bool = False, **fields: Any) -> dict[str, Any]:
    """Clear, expect one failed device with `code` and a message for a person; returns the result."""
    followed = await system.clear(**fields)
    final = followed.final
    assert final["event"] == "clear.finished", final
    assert final["status"] == "failed", final
    [result] = [r for r in final["results"] if r["device_id"] == device_id]
    assert result["outcome"] == "failed"
    assert result["error"]["code"] == code.value, result
    message = result["error"]["message"]
    assert message and code.value not in message and len(message.split()) >= 4, message
    state = show_device(system.settings, device_id)
    if not written_back:
        assert state["writebacks"] == [], state["writebacks"]
    report = await verify_chain(system.db, system.settings)
    assert report.ok and report.count > 0, report
    return result


def progress_steps(events: list[dict[str, Any]], device_id: str = DEVICE) -> list[str]:
    return [e["step"] for e in events if e["event"] == "clear.progress" and e["device_id"] == device_id]


# --- the reporting window --------------------------------------------------------------------


async def test_before_the_first_of_the_month_is_not_in_the_window(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(), clock="2026-10-28T09:00:00+08:00")) as system:
        await assert_failed(system, ErrorCode.NOT_IN_REPORTING_WINDOW)
        assert show_device(system.settings, DEVICE)["reports"] == []


async def test_a_period_that_is_not_closed_is_not_in_the_window(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device())) as system:
        await assert_failed(system, ErrorCode.NOT_IN_REPORTING_WINDOW, period="2026-11")
        assert show_device(system.settings, DEVICE)["reports"] == []


# --- offline invoices ------------------------------------------------------------------------


async def test_offline_invoices_over_the_limits_cannot_be_uploaded(make_system: SystemFactory) -> None:
    # 60 offline invoices total well over the 500,000.00 offline amount limit
    async with make_system(fleet_text(one_device(offline_pending=60))) as system:
        await assert_failed(system, ErrorCode.OFFLINE_INVOICES_PENDING)
        state = show_device(system.settings, DEVICE)
        assert state["offline_pending"] == 60 and state["reports"] == []


async def test_pending_offline_invoices_are_uploaded_first_then_the_clear_succeeds(
    make_system: SystemFactory,
) -> None:
    async with make_system(fleet_text(one_device(offline_pending=3))) as system:
        uploads: list[dict[str, Any]] = []

        async def watch(exchange: str, routing_key: str, body: bytes) -> None:
            if routing_key == "authority.upload_offline":
                uploads.append(json.loads(body))
            if routing_key in ("authority.submit_report", "authority.clearance"):
                assert uploads, "reported before the offline invoices reached the bureau"
            return None

        system.bus.hooks.append(watch)
        followed = await system.clear()
        assert followed.final["status"] == "succeeded", followed.final
        steps = progress_steps(followed.events)
        assert steps.index("offline_uploaded") < steps.index("reported")
        [upload] = uploads
        assert len(upload["invoices"]) == 3 and all(i["offline"] for i in upload["invoices"])
        state = show_device(system.settings, DEVICE)
        assert state["offline_pending"] == 0 and len(state["writebacks"]) == 2


# --- write-back refusals ---------------------------------------------------------------------


def _package(challenge: str, types: list[str]) -> WritebackPackage:
    fields: dict[str, Any] = {
        "package_id": "pkg-no-report", "device_id": DEVICE, "taxpayer_id": TAXPAYER, "machine_no": 0,
        "period": "2026-10", "invoice_types": types, "issued_at": CLOCK, "challenge": challenge,
        "next_lock_date": "2026-12-15", "clock_block": None,
    }
    ciphertext, checksum = seal(fields["package_id"], fields, emulated_device_key(DEVICE, TAXPAYER))
    return WritebackPackage.model_validate({**fields, "ciphertext": ciphertext, "checksum": checksum})


async def test_writeback_before_the_report_is_refused(make_system: SystemFactory) -> None:
    """No summary reported: unreachable through a clear (the sequence reports first), so the
    gateway is asked directly, as a confused or malicious caller would."""
    async with make_system(fleet_text(one_device())) as system:
        # an insider: a caller holding a valid service identity, so the device's own rule is what refuses
        async with RpcClient.open(identified(system.bus, "coordinator", system.settings), "coordinator") as rpc:
            with trio.fail_after(30):
                challenge = await rpc.call(COMMANDS, gateway_routing_key("default", "challenge"),
                                           DeviceCommand(device_id=DEVICE), Challenge)
                with pytest.raises(ClearCardError) as refused:
                    await rpc.call(COMMANDS, gateway_routing_key("default", "writeback"),
                                   WritebackCommand(device_id=DEVICE,
                                                    package=_package(challenge.challenge, ["004", "007"])),
                                   WritebackPackage)
        assert refused.value.code is ErrorCode.WRITEBACK_REJECTED
        assert "no summary reported" in refused.value.message
        state = show_device(system.settings, DEVICE)
        assert state["writebacks"] == [] and set(state["status"].values()) == {0}


async def test_return_not_filed(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(declared=False))) as system:
        result = await assert_failed(system, ErrorCode.NOT_DECLARED)
        assert result["backup_id"]  # the backup was taken; only the write-back is forbidden
        assert len(show_device(system.settings, DEVICE)["reports"]) == 2


async def test_comparison_failed(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(comparison="fail"))) as system:
        await assert_failed(system, ErrorCode.COMPARISON_FAILED)


async def test_a_package_changed_in_transit_is_refused_before_any_device_sees_it(
        make_system: SystemFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bureau's reply no longer matches its signature: refused, audited, the clear fails."""
    monkeypatch.setenv("CLEARCARD_COORDINATOR_SERVICE_DEADLINE", "1")  # the answer it waits for never comes
    monkeypatch.setenv("CLEARCARD_COORDINATOR_RETRY_ATTEMPTS", "1")
    async with make_system(fleet_text(one_device())) as system:

        async def tamper(exchange: str, routing_key: str, body: bytes) -> bytes | None:
            if exchange != "" or b'"ciphertext"' not in body:
                return None
            return body.replace(b'"ciphertext":"', b'"ciphertext":"00', 1)

        system.bus.hooks.append(tamper)
        with trio.fail_after(60):
            followed = await system.clear()
        assert followed.final["status"] == "failed"
        assert show_device(system.settings, DEVICE)["writebacks"] == []
        refused = await system.audit_where(lambda r: r["action"] == "message.rejected")
        assert "does not match this message" in refused[0]["detail"]["reason"]


async def test_a_tampered_package_is_rejected_by_the_device(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device())) as system:
        system.bus.resign = ServiceKeys(system.settings.identity_dir)  # the bureau itself sent it so
        tampered: list[str] = []

        async def tamper(exchange: str, routing_key: str, body: bytes) -> bytes | None:
            # the bureau's reply carrying the package: change one byte of its ciphertext
            if exchange != "" or b'"ciphertext"' not in body:
                return None
            reply = json.loads(body)
            package = reply["result"]["package"]
            last = package["ciphertext"][-1]
            package["ciphertext"] = package["ciphertext"][:-1] + ("0" if last != "0" else "1")
            tampered.append(package["package_id"])
            return json.dumps(reply).encode()

        system.bus.hooks.append(tamper)
        result = await assert_failed(system, ErrorCode.WRITEBACK_REJECTED)
        assert len(tampered) == 1 and "checksum" in result["error"]["message"]
        # the reported summaries stay; a later clear with an intact package resumes and clears
        system.bus.hooks.clear()
        followed = await system.clear()
        assert followed.final["status"] == "succeeded", followed.final
        state = show_device(system.settings, DEVICE)
        assert len(state["reports"]) == 2 and len(state["writebacks"]) == 2


async def test_a_challenge_replaced_before_the_writeback_is_rejected(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device())) as system:
        async with RpcClient.open(identified(system.bus, "console", system.settings), "console") as rpc:

            async def rechallenge(exchange: str, routing_key: str, body: bytes) -> None:
                # someone else asks the device for a challenge between ours and the package
                # (the package comes with the report, or on its own after a mismatch)
                if routing_key in ("authority.clearance", "authority.writeback_package"):
                    await rpc.call(COMMANDS, gateway_routing_key("default", "challenge"),
                                   DeviceCommand(device_id=DEVICE), Challenge)
                return None

            system.bus.hooks.append(rechallenge)
            result = await assert_failed(system, ErrorCode.WRITEBACK_REJECTED)
        assert "challenge" in result["error"]["message"]


# --- the device itself -----------------------------------------------------------------------


async def test_clock_abnormal(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(clock_skew_seconds=-7200))) as system:
        await assert_failed(system, ErrorCode.DEVICE_CLOCK_ABNORMAL)
        assert show_device(system.settings, DEVICE)["reports"] == []


async def test_wrong_pin_costs_exactly_one_try(make_system: SystemFactory) -> None:
    fleet = fleet_text(one_device(registered_pin="87654321", pin_tries_left=5))
    async with make_system(fleet) as system:
        await assert_failed(system, ErrorCode.DEVICE_PIN_INVALID, request_id="pin-first")
        assert show_device(system.settings, DEVICE)["pin_tries_left"] == 4
        # the same request again (re-sent), then a new request: neither tries the PIN again
        again = await system.clear(request_id="pin-first")
        assert [e["event"] for e in again.events] == ["clear.finished"]
        result = await assert_failed(system, ErrorCode.DEVICE_PIN_INVALID)
        assert "not tried again" in result["error"]["message"]
        state = show_device(system.settings, DEVICE)
        assert state["pin_tries_left"] == 4 and state["reports"] == []


async def test_no_pin_tries_left(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(pin_tries_left=0))) as system:
        await assert_failed(system, ErrorCode.DEVICE_PIN_LOCKED)


async def test_the_last_wrong_try_locks_the_pin(make_system: SystemFactory) -> None:
    fleet = fleet_text(one_device(registered_pin="87654321", pin_tries_left=1))
    async with make_system(fleet) as system:
        await assert_failed(system, ErrorCode.DEVICE_PIN_LOCKED)
        assert show_device(system.settings, DEVICE)["pin_tries_left"] == 0
        await assert_failed(system, ErrorCode.DEVICE_PIN_LOCKED)
        assert show_device(system.settings, DEVICE)["pin_tries_left"] == 0


async def test_device_past_its_lock_date_is_locked(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device(), clock="2026-11-20T09:00:00+08:00")) as system:
        await assert_failed(system, ErrorCode.DEVICE_LOCKED)
        state = show_device(system.settings, DEVICE)
        assert state["locked"] and state["reports"] == []


async def test_device_held_by_another_program_is_busy(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device())) as system:
        attempts: list[str] = []

        async def count(exchange: str, routing_key: str, body: bytes) -> None:
            if routing_key == gateway_routing_key("default", "precheck"):
                attempts.append(routing_key)
            return None

        system.bus.hooks.append(count)
        hold(system.settings, DEVICE)
        await assert_failed(system, ErrorCode.DEVICE_BUSY)
        assert len(attempts) == 3  # the coordinator's retries, then the refusal
        state = show_device(system.settings, DEVICE)
        assert state["pin_tries_left"] == 5 and state["reports"] == []
        hold(system.settings, DEVICE, False)
        followed = await system.clear()
        assert followed.final["status"] == "succeeded", followed.final


async def test_unplugged_device_is_offline(make_system: SystemFactory) -> None:
    async with make_system(fleet_text(one_device())) as system:
        unplug(system.settings, DEVICE)
        await assert_failed(system, ErrorCode.DEVICE_OFFLINE)
        plug(system.settings, DEVICE)
        followed = await system.clear()
        assert followed.final["status"] == "succeeded", followed.final


def test_every_failure_has_plain_words() -> None:
    for code in ErrorCode:
        assert PLAIN_WORDS[code].endswith(".") and code.value not in PLAIN_WORDS[code]
