"""schemathesis against the running console: every route (but restore and the emulator's) answers
only statuses it documents, with bodies that match its schema, and never a server error.

The whole system runs in this process (in-memory bus, real PostgreSQL); schemathesis runs as its
own process against the console's port, with an admin's token, and every one of its checks decides
(server errors, undocumented statuses, schema and content-type mismatches, schema-valid requests
refused, schema-violating ones accepted, Allow headers, authentication ignored ...);
tests/console/schemathesis.toml says where a schema cannot say everything.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

from shared.authz.roles import Role
from tests.console.conftest import Console

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # fail_after below bounds it

EXCLUDED = r"^/api/(backups/[^/]+/restore|emulator/.*)$"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # what the schema cannot say, per operation


async def test_schemathesis_finds_nothing(system: Console, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the test dependency group"
    token = system.token(Role.ADMIN)
    command = [st, "--config-file", str(CONFIG), "run", f"{system.base_url}/openapi.json",
               "--exclude-path-regex", EXCLUDED,
               "--header", f"Authorization: Bearer {token}", "--max-examples", os.environ.get("ST_EXAMPLES", "25"),
               "--seed", "1", "--workers", "1", "--request-timeout", "60", "--phases", "examples,coverage,fuzzing",
               "--suppress-health-check", "all"]
    # its report goes to a file: read it while it runs (CLEARCARD_SCHEMATHESIS_LOG), or in the failure
    log = trio.Path(os.environ.get("CLEARCARD_SCHEMATHESIS_LOG", tmp_path / "schemathesis.txt"))
    async with await log.open("wb") as out:
        with trio.fail_after(900):
            # in tmp_path: schemathesis keeps a cache of what it found in its working folder
            done = await trio.run_process(command, stdout=out.wrapped.fileno(), stderr=out.wrapped.fileno(),
                                          check=False, cwd=tmp_path,
                                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "160"})
    assert done.returncode == 0, (await log.read_text(errors="replace"))[-12000:]
