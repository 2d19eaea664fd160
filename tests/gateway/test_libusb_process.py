"""`clearcard serve gateway` with no fleet file, as its own process: libusb-1.0, or one clear message.

The library is made unfindable for the child through CLEARCARD_LIBUSB (handed to pyusb's
`find_library`), not by faking any module: the product itself decides and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio
import usb.libloader

from tests.support.processes import serving
from tests.support.servers import missing

CLEARCARD = [sys.executable, "-m", "clearcard"]


def env_for(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARCARD_", "OTEL_", "PYUSB_"))}
    env.update(CLEARCARD_DATA_DIR=str(tmp_path / "data"), CLEARCARD_DATABASE_URL=database_url,
               CLEARCARD_LOG_LEVEL="INFO", **extra)
    return env


async def serve_gateway(env: dict[str, str]) -> trio.Process:
    with trio.fail_after(60):
        return await trio.run_process([*CLEARCARD, "serve", "gateway"], env=env, capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_no_fleet_file_serves_the_hosts_usb_through_libusb(tmp_path: Path, database_url: str) -> None:
    if not usb.libloader.locate_library(("usb-1.0", "libusb-1.0", "usb")):
        missing("libusb-1.0", "apt-get install libusb-1.0-0")
    log = tmp_path / "gateway.log"
    async with serving(env_for(tmp_path, database_url), "gateway", log=log):
        pass  # it answered `serving`: the gateway is up (on a machine without USB, with no devices)
    text = log.read_text()
    assert "the host's USB devices, through libusb-1.0" in text and "gateway ready" in text
    assert "Traceback" not in text


async def test_a_missing_libusb_is_one_clear_message_and_no_start(tmp_path: Path, database_url: str) -> None:
    done = await serve_gateway(env_for(tmp_path, database_url, CLEARCARD_LIBUSB=str(tmp_path / "libusb-1.0.so.0")))
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "libusb-1.0" in stderr and "apt-get install libusb-1.0-0" in stderr
    assert "Traceback" not in stderr and "serving" not in stderr
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1


async def test_a_library_that_is_not_libusb_is_named(tmp_path: Path, database_url: str) -> None:
    fake = tmp_path / "libusb-1.0.so.0"
    fake.write_bytes(b"not a shared library")
    done = await serve_gateway(env_for(tmp_path, database_url, CLEARCARD_LIBUSB=str(fake)))
    stderr = done.stderr.decode()
    assert done.returncode == 2 and "could not be loaded as libusb-1.0" in stderr and str(fake) in stderr
    assert "Traceback" not in stderr


async def test_a_bad_fleet_file_is_one_clear_message_too(tmp_path: Path, database_url: str) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[device]]\nid = "12"\n', encoding="utf-8")
    done = await serve_gateway(env_for(tmp_path, database_url, CLEARCARD_FLEET=str(fleet)))
    stderr = done.stderr.decode()
    assert done.returncode == 2 and f"{fleet}, line 2" in stderr and "Traceback" not in stderr
