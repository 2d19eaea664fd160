"""The device registry end to end: `clearcard serve all` as its own process on RabbitMQ and
PostgreSQL, and the `clearcard device ...` commands an operator runs beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.fleets import BRANCH, CLOCK, device
from tests.support.processes import cli, environment, serving
from tests.support.vhosts import fresh_vhost

pytestmark = pytest.mark.rabbitmq
KNOWN, WRONG, NEW = "661500000001", "661500000003", "661500000005"
TAXPAYER = "91420100MA4K0001XK"
HEADER = "device_id,family,taxpayer_id,branch,machine_no\n"


def fleet(path: Path) -> Path:
    path.write_text(
        f'clock = "{CLOCK}"\n\n'
        + device(KNOWN, "ukey", TAXPAYER, ["004", "007"]) + "\n"
        + device(WRONG, "ukey", TAXPAYER, ["004"], machine_no=1, registered_pin="87654321") + "\n"
        + device(NEW, "golden_tax_disk", TAXPAYER, ["004", "026"], machine_no=2, enrolled=False),
        encoding="utf-8")
    return path


async def clear(env: dict[str, str], *devices: str) -> tuple[int, dict[str, Any]]:
    args = [a for d in devices for a in ("--device", d)]
    done = await cli(env, "clear", "--branch", BRANCH, "--period", "2026-10", *args, "--json", check=False)
    return done.returncode, json.loads(done.stdout)


async def listed(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in json.loads((await cli(env, "device", "list", "--json")).stdout)}


async def test_enrol_correct_retire_over_rabbitmq(tmp_path: Path, database_url: str) -> None:
    async with fresh_vhost() as url:
        env = environment(tmp_path / "data", url, database_url, fleet(tmp_path / "fleet.toml"))
        async with serving(env, "all", log=tmp_path / "serve.log"):
            # hardware plugged in but not enrolled: shown to operators, refused by name, left out of branches
            seen = (await listed(env))[NEW]
            assert (seen["enrolled"], seen["gateway_id"], seen["family"], seen["serial"]) == (
                False, "default", "golden_tax_disk", NEW)
            code, final = await clear(env, NEW)
            assert code == 1 and final["event"] == "clear.rejected"
            assert final["error"]["code"] == "UNKNOWN_DEVICE" and "not enrolled" in final["error"]["message"]
            code, final = await clear(env)
            outcomes = {r["device_id"]: r for r in final["results"]}
            assert set(outcomes) == {KNOWN, WRONG} and outcomes[KNOWN]["outcome"] == "cleared"
            assert outcomes[WRONG]["error"]["code"] == "DEVICE_PIN_INVALID"

            # a file with one bad row imports nothing and names the row
            bad = tmp_path / "bad.csv"
            bad.write_text(HEADER + f"{NEW},golden_tax_disk,{TAXPAYER},{BRANCH},2\n"
                           f"661500000009,ukey,{TAXPAYER[:17]}Y,{BRANCH},3\n", encoding="utf-8")
            refused = await cli(env, "device", "import", str(bad), "--json", check=False)
            assert refused.returncode == 1 and "line 3: taxpayer id" in refused.stderr.decode()
            assert "nothing was imported" in refused.stderr.decode()
            answer = json.loads(refused.stdout)
            assert answer["error"]["code"] == "INVALID_REQUEST" and [e["line"] for e in answer["errors"]] == [3]
            assert (await listed(env))[NEW]["enrolled"] is False

            good = tmp_path / "good.csv"
            good.write_text(HEADER + f"{NEW},golden_tax_disk,{TAXPAYER},{BRANCH},2\n", encoding="utf-8")
            counts = json.loads((await cli(env, "device", "import", str(good), "--json")).stdout)
            assert counts["enrolled"] == 1
            for device_id in (NEW, WRONG):  # NEW has no PIN yet; WRONG's is corrected
                pin = await trio_run_with_stdin(env, "device", "set-pin", device_id, "--pin-stdin", stdin=b"12345678\n")
                assert pin == 0
            code, final = await clear(env, NEW, WRONG)
            assert code == 0 and final["status"] == "succeeded", final
            shown_wrong = json.loads((await cli(env, "emulator", "show", WRONG, "--json")).stdout)
            shown_new = json.loads((await cli(env, "emulator", "show", NEW, "--json")).stdout)
            assert shown_wrong["pin_tries_left"] == 4  # exactly the one try the wrong PIN cost
            assert shown_new["pin_tries_left"] == 5 and {w["invoice_type"] for w in shown_new["writebacks"]} == {
                "004", "026"}

            exported = (await cli(env, "device", "export")).stdout.decode()
            assert exported.splitlines()[0] == HEADER.strip()
            assert sorted(line.split(",")[0] for line in exported.splitlines()[1:]) == [KNOWN, WRONG, NEW]
            assert "12345678" not in exported and "87654321" not in exported

            # retired: refused by name, left out of the branch, history and backups kept
            await cli(env, "device", "retire", KNOWN)
            code, final = await clear(env, KNOWN)
            assert final["error"]["code"] == "UNKNOWN_DEVICE" and "retired" in final["error"]["message"]
            code, final = await clear(env)
            assert code == 0 and {r["device_id"] for r in final["results"]} == {NEW, WRONG}
            status = json.loads((await cli(env, "status", "--json")).stdout)
            assert {s["device_id"] for s in status} == {NEW, WRONG}
            assert (await listed(env))[KNOWN]["retired"] is True
            backups = json.loads((await cli(env, "backup", "list", "--json")).stdout)
            assert KNOWN in {b["device"] if "device" in b else b["device_id"] for b in backups}
            exported = (await cli(env, "device", "export")).stdout.decode()
            assert KNOWN not in exported
            audit = (await cli(env, "audit", "export", "--json")).stdout.decode()
        actions = [json.loads(line)["action"] for line in audit.splitlines()]
        for action in ("device.import", "device.enrolled", "device.pin_recorded", "device.retired"):
            assert action in actions, (action, [a for a in actions if a.startswith("device.")])
        assert "12345678" not in audit and "87654321" not in audit
        assert (await cli(env, "audit", "verify")).stdout.decode().startswith("ok ")


async def trio_run_with_stdin(env: dict[str, str], *args: str, stdin: bytes) -> int:
    import sys

    import trio

    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-m", "clearcard", *args], env=dict(env), stdin=stdin,
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.returncode
