"""Alembic: the migrations build exactly the ORM schema, and go down and up again."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

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


@contextmanager
def at_revision(database_url: str, revision: str) -> Iterator[Engine]:
    """The database taken down to base and up to `revision` (to insert rows as that schema had
    them); whatever happens, back to base and up to head afterwards."""
    engine = make_engine(database_url)
    try:
        downgrade(database_url, "base")
        upgrade(database_url, revision)
        yield engine
    finally:
        engine.dispose()
        downgrade(database_url, "base")
        upgrade(database_url)


def test_results_of_the_first_schema_become_final_checkpoint_results(database_url):
    """0002 adds results.train_step: rows recorded before it were of the final checkpoint."""
    with at_revision(database_url, "0001") as engine:
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


def test_tokens_and_experiments_get_owners_and_go_back(database_url):
    """0006: an existing token becomes an admin token of a user named after it; an experiment it
    submitted with an idempotency key is that user's (and so is its sweep), one without a key
    nobody's (admins only), at priority 0. Down to 0005 the rows stay and the new columns go; up again works."""
    with at_revision(database_url, "0005") as engine:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO api_tokens (id, name, token_hash, created_at) "
                              "VALUES ('tok_1', 'laptop', 'h1', CURRENT_TIMESTAMP)"))
            for exp_id in ("exp_keyed", "exp_plain"):
                conn.execute(text("INSERT INTO experiments (id, name, spec, spec_hash, code_version, created_at) "
                                  f"VALUES ('{exp_id}', 'e', '{{}}', 'h', 'v', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO idempotency_keys (scope, key, request_hash, experiment_id, created_at) "
                              "VALUES ('tok_1', 'k1', 'h', 'exp_keyed', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO sweeps (id, experiment_id, spec, status, created_at) "
                              "VALUES ('swp_1', 'exp_keyed', '{}', 'queued', CURRENT_TIMESTAMP)"))
        upgrade(database_url)
        with engine.connect() as conn:
            assert conn.execute(text('SELECT id, "user", scopes, expires_at FROM api_tokens')).all() == \
                [("tok_1", "laptop", "admin", None)]
            assert conn.execute(text("SELECT name, max_runs, max_cpus, max_gpus FROM users")).all() == \
                [("laptop", None, None, None)]
            assert conn.execute(text("SELECT id, owner, priority FROM experiments ORDER BY id")).all() == \
                [("exp_keyed", "laptop", 0), ("exp_plain", None, 0)]
            assert conn.execute(text("SELECT owner FROM sweeps")).scalar_one() == "laptop"  # its experiment's
        downgrade(database_url, "0005")
        columns = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in ("api_tokens", "experiments", "sweeps")}
        assert not columns["api_tokens"] & {"user", "scopes", "expires_at"}
        assert not columns["experiments"] & {"owner", "priority"} and "owner" not in columns["sweeps"]
        assert "users" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, name FROM api_tokens")).all() == [("tok_1", "laptop")]
            assert conn.execute(text("SELECT id FROM experiments ORDER BY id")).scalars().all() == ["exp_keyed", "exp_plain"]
            assert conn.execute(text("SELECT experiment_id FROM idempotency_keys")).scalars().all() == ["exp_keyed"]
        upgrade(database_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT owner FROM experiments WHERE id = 'exp_keyed'")).scalar_one() == "laptop"
