"""Alembic: the migrations build exactly the ORM schema, and go down and up again."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service.store.db import downgrade, make_engine, upgrade
from service.store.models import Base


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


def test_results_of_the_first_schema_become_final_checkpoint_results(database_url):
    """0002 adds results.train_step: rows recorded before it were of the final checkpoint."""
    engine = make_engine(database_url)
    try:
        downgrade(database_url, "base")
        upgrade(database_url, "0001")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO experiments (id, name, spec, spec_hash, code_version, created_at) "
                              "VALUES ('exp_1', 'e', '{}', 'h', 'v', CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO runs (id, experiment_id, \"index\", dataset, weighting, seed, config, evaluation, resources, "
                "config_hash, status, current_step, total_steps, metrics_offset, cancel_requested, created_at, updated_at) "
                "VALUES ('run_1', 'exp_1', 0, 'digits', 'constant', 0, '{}', '{}', '{}', 'c', 'succeeded', 300, 300, 0, "
                "false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO results (run_id, num_steps, sampler, metric, value, created_at) "
                              "VALUES ('run_1', 10, 'ddpm', 'fd_digits', 1.5, CURRENT_TIMESTAMP)"))
        upgrade(database_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT train_step, value FROM results")).all() == [(300, 1.5)]
    finally:
        downgrade(database_url, "base")
        upgrade(database_url)
        engine.dispose()
