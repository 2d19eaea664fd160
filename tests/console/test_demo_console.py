"""`clearcard demo --console` as a process on embedded defaults: its printed login signs in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pyotp
import pytest
import trio

pytestmark = pytest.mark.slow

WANTED = ("console", "user", "password", "totp secret", "ready")


async def _read_login(stdout: trio.abc.ReceiveStream) -> dict[str, str]:
    """The `key: value` lines the demo prints, up to `ready`."""
    found: dict[str, str] = {}
    buffer = b""
    while "ready" not in found:
        chunk = await stdout.receive_some()
        assert chunk, f"the demo stopped before it was ready: {found}"
        buffer += chunk
        *lines, rest = buffer.split(b"\n")
        buffer = rest
        for line in lines:
            key, sep, value = line.decode(errors="replace").partition(": ")
            if sep and key in WANTED:
                found[key] = value.strip()
            elif line.startswith(b"ready"):
                found["ready"] = "yes"
    return found


async def test_the_demo_serves_the_console_and_its_login_works(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(CLEARCARD_DATA_DIR=str(tmp_path / "data"), CLEARCARD_HTTP="127.0.0.1:0", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", "from clearcard.cli import main; main()", "demo", "--console"]
    log = tmp_path / "demo.stderr"
    with log.open("wb") as stderr:
        async with trio.open_nursery() as nursery:
            demo = await nursery.start(partial(trio.run_process, command, env=env, stdout=subprocess.PIPE,
                                               stderr=stderr, check=False))
            assert demo.stdout is not None
            try:
                with trio.fail_after(150):  # embedded PostgreSQL starts, then one branch is cleared
                    login = await _read_login(demo.stdout)
                base = login["console"].rstrip("/")
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    answer = await http.post("/api/login", json={
                        "username": login["user"], "password": login["password"],
                        "totp": pyotp.TOTP(login["totp secret"]).now()})
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["role"] == "admin"
                    headers = {"authorization": f"Bearer {answer.json()['token']}"}
                    month = (await http.get("/api/month", headers=headers)).json()
                    assert month["totals"]["devices"] == 10 and month["totals"]["cleared"] == 4
                    assert (await http.get("/")).status_code == 200
            finally:
                demo.send_signal(signal.SIGINT)
                with trio.fail_after(60):
                    code = await demo.wait()
    assert code == 0, log.read_text(errors="replace")[-3000:]
