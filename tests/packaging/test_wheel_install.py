"""The product as users install it: a wheel built from this tree, installed into a fresh virtual
environment outside the checkout, serving every service against real RabbitMQ and PostgreSQL.

The editable install used by the rest of the suite reads files straight from the checkout, so it
cannot see a file the wheel leaves out; these tests can.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.fleets import BRANCH, two_family_fleet
from tests.support.processes import environment, serving
from tests.support.vhosts import fresh_vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("clearcard", "shared", "services", "device_gateway", "device_registry")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the working tree, as `pip wheel .` builds it for users."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the files git sees (tracked, or new and not ignored): a stale build/
    # folder in the checkout would otherwise slip files into the wheel that a clean build leaves out.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("clearcard-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment (outside the checkout) with only the wheel and its dependencies."""
    home = tmp_path_factory.mktemp("venv")
    assert REPO not in home.parents, "the environment must live outside the checkout"
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    python = home / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=900)
    yield home


def tracked_data_files() -> list[str]:
    """Non-Python files git tracks inside the packages (everything the product may read at run time)."""
    listed = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.split()
    return [f for f in listed if not f.endswith(".py")]


def test_wheel_holds_every_data_file_of_the_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = tracked_data_files()
    assert "services/console/static/index.html" in data  # the check looks at the right files
    missing = [f for f in data if f not in names]
    assert not missing, f"the wheel leaves out {missing}"


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("CLEARCARD_", "OTEL_"))}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_installed_code_comes_from_the_environment(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import clearcard, services.console, shared.db; print(services.console.__file__)"],
        cwd=tmp_path, env=_clean_env({}), check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(installed)), where
    help_text = subprocess.run([str(installed / "bin" / "clearcard"), "--help"], cwd=tmp_path,
                               env=_clean_env({}), check=True, capture_output=True, text=True).stdout
    assert "serve" in help_text


async def test_installed_wheel_serves_all_and_clears_a_branch(
    installed: Path, tmp_path: Path, database_url: str
) -> None:
    command = installed / "bin" / "clearcard"
    fleet = two_family_fleet(tmp_path / "fleet.toml")
    port = _free_port()
    async with fresh_vhost() as url:
        env = _clean_env(environment(tmp_path / "data", url, database_url, fleet))
        env["CLEARCARD_HTTP"] = f"127.0.0.1:{port}"

        async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            with trio.fail_after(120):
                return await trio.run_process([str(command), *args], env=env, cwd=tmp_path,
                                              capture_stdout=True, capture_stderr=True, check=False)

        migrated = await cli("db", "migrate")
        assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]
        async with serving(env, "all", log=tmp_path / "serve.log", ready_within=90, command=[str(command)],
                           cwd=tmp_path) as process:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                with trio.fail_after(30):
                    while True:
                        try:
                            page = await http.get("/")
                            break
                        except httpx.TransportError:
                            await trio.sleep(0.2)  # the console binds its port just after "serving"
                assert page.status_code == 200 and "<html" in page.text.lower()
                assert (await http.get("/healthz")).status_code == 200
            done = await cli("clear", "--branch", BRANCH, "--period", "2026-10")
            assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
            assert process.poll() is None, "serve all died during the clear"
        shown = json.loads((await cli("emulator", "show", "661500000001", "--json")).stdout)
        assert {w["invoice_type"] for w in shown["writebacks"]} == {"004", "007", "026"}
