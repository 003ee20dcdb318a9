"""The state store: SQLite (WAL) with numbered migrations from ``db/migrations``, plus JSON-lines logs."""

from .db import Store, connect, migrate, now_ms  # noqa: F401
