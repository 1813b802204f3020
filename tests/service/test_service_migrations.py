"""Alembic: the migrations build exactly the ORM schema, and go down and up again."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import downgrade, make_engine, upgrade
from service.models import Base


def test_migrations_match_models(database_url):
    engine = make_engine(database_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_roundtrip(database_url):
    engine = make_engine(database_url)
    try:
        downgrade(database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(database_url)
        upgrade(database_url)  # idempotent: service start and `snrlab db upgrade` both run it
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        upgrade(database_url)
        engine.dispose()
