"""Persistence: engines and sessions, the ORM models, migrations, and keyword-only functions over a
Session (no HTTP types, no commits: callers own the transaction)."""
