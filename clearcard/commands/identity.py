"""`clearcard identity ...`: the key pairs services sign their internal messages with.

Each service has its own Ed25519 key pair (shared/authz/identity.py). On one host the services
make their own at first start; across hosts, make them once (`keygen`), give every host every
service's public key (`<service>.pub`) and each host only the private keys (`<service>.key`)
of the services it runs (docs/scaling.md: service identities).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.config import Settings

app = typer.Typer(help="Service identity keys: one Ed25519 key pair per service.", no_args_is_help=True)


def _folder(out: Path | None) -> Path:
    try:
        return out or Settings.from_env().identity_dir
    except ValueError as exc:
        sys.stderr.write(f"error: configuration error: {exc}\n")
        raise typer.Exit(2) from None


@app.command("keygen")
def keygen(
    service: Annotated[list[str] | None, typer.Argument(help="Services to make keys for (default: every one).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder (default: CLEARCARD_IDENTITY_DIR or <data dir>/keys/"
                                                  "services).")] = None,
) -> None:
    """Make the key pairs that do not exist yet (existing ones are kept)."""
    from shared.authz.identity import ServiceKeys
    from shared.bus.senders import SERVICES

    names = service or sorted(SERVICES)
    unknown = sorted(set(names) - SERVICES)
    if unknown:
        sys.stderr.write(f"error: unknown service(s) {', '.join(unknown)}; choose from {', '.join(sorted(SERVICES))}\n")
        raise typer.Exit(2)
    keys = ServiceKeys(_folder(out))
    for name in names:
        made = keys.create(name)
        sys.stderr.write(f"{name}: {'made' if made else 'kept'} {keys.folder / name}.key and .pub\n")


@app.command("list")
def list_keys(
    out: Annotated[Path | None, typer.Option("--dir", help="Folder (default: the configured one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Each service's public key fingerprint (SHA-256), and whether its private key is on this host."""
    folder = _folder(out)
    rows = []
    for pub in sorted(folder.glob("*.pub")):
        name = pub.name.removesuffix(".pub")
        rows.append({"service": name, "fingerprint": hashlib.sha256(pub.read_bytes()).hexdigest()[:32],
                     "private_key_here": (folder / f"{name}.key").exists()})
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for row in rows:
        here = "private key here" if row["private_key_here"] else ""
        sys.stdout.write(f"{row['service']:<16} {row['fingerprint']}  {here}\n")
