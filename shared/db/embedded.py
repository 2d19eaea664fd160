"""An embedded PostgreSQL under the data dir, for `clearcard demo` with nothing configured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) the pgserver cluster under `data_dir/postgres`; yields an asyncpg DSN."""
    import warnings

    # pgserver's platformdirs warns about XDG_RUNTIME_DIR on servers; it is harmless here
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver  # heavy import, only when embedding

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pg_dir, cleanup_mode="stop")
    try:
        uri = server.get_uri()
        # pgserver answers on a unix socket; asyncpg takes it as the `host` query parameter
        if "host=" in uri:
            _, _, query = uri.partition("?")
            host = dict(p.split("=", 1) for p in query.split("&"))["host"]
            yield f"postgresql://postgres@/postgres?host={quote(host)}"
        else:
            yield uri
    finally:
        server.cleanup()
