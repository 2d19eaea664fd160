"""A private PostgreSQL cluster with `ssl = on`, started by a test and stopped after it.

The shared server is plain TCP and must not be reconfigured, and a TLS-terminating proxy
cannot stand in for PostgreSQL (its TLS starts inside the protocol, after an SSLRequest), so
the database TLS tests get a throwaway cluster of their own: initdb, a server certificate
from the test CA, `hostssl` only in pg_hba.conf, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from tests.support.servers import missing
from tests.support.tls import Issued

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((str(d / name) for d in _BIN_DIRS if (d / name).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(*argv: str, owner: str | None) -> None:
    # PostgreSQL refuses to run as root: run it as the cluster's owner
    command = ["runuser", "-u", owner, "--", *argv] if owner else list(argv)
    await trio.run_process(command, capture_stdout=True, capture_stderr=True)


@contextlib.asynccontextmanager
async def tls_cluster(server: Issued) -> AsyncIterator[int]:
    """Run a cluster that accepts only TLS connections (user postgres, trust); yields its port."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl)", "apt-get install postgresql")
    assert initdb is not None and pg_ctl is not None
    owner = "postgres" if os.geteuid() == 0 else None
    # not under pytest's tmp_path: that is private to root, and the server runs as its owner
    folder = Path(tempfile.mkdtemp(prefix="cc-pgtls-"))
    data = folder / "pgdata"
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    await _run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", owner=owner)
    for source, name in ((server.cert, "server.crt"), (server.key, "server.key")):
        target = data / name
        shutil.copy(source, target)
        target.chmod(0o600)
        if owner:
            os.chown(target, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{folder}'\n"
                   "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n")
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                                      "hostnossl all all 127.0.0.1/32 reject\n")
    try:
        await _run(pg_ctl, "-D", str(data), "-w", "-l", str(folder / "server.log"), "start", owner=owner)
        try:
            yield port
        finally:
            with trio.CancelScope(shield=True):
                await _run(pg_ctl, "-D", str(data), "-m", "immediate", "stop", owner=owner)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
