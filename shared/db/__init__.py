"""PostgreSQL through asyncpg on trio-asyncio: one pool owner, migrations, an inbox."""

from shared.db.pool import Database, DatabaseUnavailable

__all__ = ["Database", "DatabaseUnavailable"]
