"""Configuration read from the environment, exactly as contract §1 names it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.deadlines import Thresholds
from shared.tax_calendar import DEFAULT as DEFAULT_CALENDAR
from shared.tax_calendar import TaxCalendar, load_calendar

DEFAULT_HTTP = "127.0.0.1:8080"


@dataclass(frozen=True)
class TlsFiles:
    """Certificates for the links a process opens or serves (PEM files).

    The broker link verifies the server against `amqp_ca` (the system's CAs when unset) and
    presents `amqp_cert`/`amqp_key` when the broker asks for a client certificate. PostgreSQL takes
    its own from the URL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`). The console serves HTTPS
    with `http_cert`/`http_key`.
    """

    amqp_ca: Path | None = None  # CLEARCARD_AMQP_CA
    amqp_cert: Path | None = None  # CLEARCARD_AMQP_CERT
    amqp_key: Path | None = None  # CLEARCARD_AMQP_KEY
    http_cert: Path | None = None  # CLEARCARD_HTTP_CERT
    http_key: Path | None = None  # CLEARCARD_HTTP_KEY

    @classmethod
    def from_env(cls, path: Callable[[str], Path | None]) -> TlsFiles:
        files = cls(amqp_ca=path("CLEARCARD_AMQP_CA"), amqp_cert=path("CLEARCARD_AMQP_CERT"),
                    amqp_key=path("CLEARCARD_AMQP_KEY"), http_cert=path("CLEARCARD_HTTP_CERT"),
                    http_key=path("CLEARCARD_HTTP_KEY"))
        if (files.amqp_cert is None) != (files.amqp_key is None):
            raise ValueError("CLEARCARD_AMQP_CERT and CLEARCARD_AMQP_KEY go together")
        if (files.http_cert is None) != (files.http_key is None):
            raise ValueError("CLEARCARD_HTTP_CERT and CLEARCARD_HTTP_KEY go together")
        return files


@dataclass(frozen=True)
class Settings:
    """Everything a ClearCard process reads from its environment."""

    amqp_url: str | None
    database_url: str | None
    data_dir: Path
    backup_dirs: tuple[Path, ...]
    fleet_file: Path | None
    http_host: str
    http_port: int
    gateway_id: str = "default"  # CLEARCARD_GATEWAY_ID: which devices' commands this gateway serves
    tls: TlsFiles = field(default_factory=TlsFiles)
    restore_dir: Path | None = None  # CLEARCARD_RESTORE_ROOT
    anchor_dirs: tuple[Path, ...] = ()  # CLEARCARD_AUDIT_ANCHORS
    identity_keys_dir: Path | None = None  # CLEARCARD_IDENTITY_DIR
    calendar: TaxCalendar = DEFAULT_CALENDAR  # CLEARCARD_TAX_CALENDAR: deadlines and lock dates
    thresholds: Thresholds = field(default_factory=Thresholds)  # lock-date warnings, colours

    @property
    def embedded_bus(self) -> bool:
        """True when no broker is configured: all services must share this process."""
        return self.amqp_url is None

    @property
    def embedded_database(self) -> bool:
        """True when PostgreSQL is started under the data dir (pgserver)."""
        return self.database_url is None

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def emulator_dir(self) -> Path:
        return self.data_dir / "emulator"

    @property
    def restore_root(self) -> Path:
        """The only folder the console restores backups into (and below)."""
        return self.restore_dir or self.data_dir / "restores"

    @property
    def audit_anchors(self) -> tuple[Path, ...]:
        """Where the audit service keeps its chain of signed checkpoints: off the database host."""
        return self.anchor_dirs or tuple(d / "audit-anchors" for d in self.backup_dirs)

    @property
    def identity_dir(self) -> Path:
        """Every service's public identity key, and this host's services' private ones."""
        return self.identity_keys_dir or self.keys_dir / "services"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the contract's CLEARCARD_* variables; empty values count as unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        data_dir = Path(get("CLEARCARD_DATA_DIR") or ".clearcard").absolute()
        backup_raw = get("CLEARCARD_BACKUP_DIRS")
        if backup_raw:
            backup_dirs = tuple(Path(p).absolute() for p in backup_raw.split(":") if p.strip())
        else:
            backup_dirs = (data_dir / "backups" / "primary", data_dir / "backups" / "secondary")
        fleet = get("CLEARCARD_FLEET")
        host, port = _parse_http(get("CLEARCARD_HTTP") or DEFAULT_HTTP)

        def path(name: str) -> Path | None:
            value = get(name)
            return Path(value).absolute() if value else None

        anchors = get("CLEARCARD_AUDIT_ANCHORS")
        return cls(
            amqp_url=get("CLEARCARD_AMQP_URL"),
            database_url=get("CLEARCARD_DATABASE_URL"),
            data_dir=data_dir,
            backup_dirs=backup_dirs,
            fleet_file=Path(fleet).absolute() if fleet else None,
            http_host=host,
            http_port=port,
            gateway_id=get("CLEARCARD_GATEWAY_ID") or "default",
            tls=TlsFiles.from_env(path),
            restore_dir=path("CLEARCARD_RESTORE_ROOT"),
            anchor_dirs=tuple(Path(p).absolute() for p in anchors.split(":") if p.strip()) if anchors else (),
            identity_keys_dir=path("CLEARCARD_IDENTITY_DIR"),
            # a bad calendar stops every command and service with the file and line named
            calendar=load_calendar(calendar_file) if (calendar_file := get("CLEARCARD_TAX_CALENDAR"))
            else DEFAULT_CALENDAR,
            thresholds=Thresholds.from_env(env),
        )


def _parse_http(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"CLEARCARD_HTTP must be host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
