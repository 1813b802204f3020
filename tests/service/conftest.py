"""Service fixtures: a real database per backend (SQLite file and a throwaway PostgreSQL
database), an app per test, a fake executor for lifecycle tests, a live uvicorn server."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeExecutor
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.app.main import create_app
from service.core.config import Settings
from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade
from service.store.models import Base

# Where the PostgreSQL tests create their own database. Unreachable is a failure, not a skip.
PG_ADMIN_URL = os.environ.get("SNRLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

SPEC: dict[str, Any] = {
    "name": "digits-weightings",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 100, "batch_size": 16, "seeds": [0], "num_timesteps": 1000},
    "evaluation": {"steps": [5, 20], "samplers": ["ddpm"], "num_samples": 64, "metrics": ["fd_digits"]},
}


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: runs a real service on a real Ray cluster (slow on 2 cores)")


def spec(**overrides: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(SPEC))
    out.update(overrides)
    return out


@pytest.fixture
def make_spec():
    return spec


def _create_pg_database() -> tuple[str, str]:
    import psycopg

    try:
        conn = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for the service tests and is unreachable at {PG_ADMIN_URL}: {e}")
    name = f"snrlab_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """A migrated database on each backend, shared by the session; tables are emptied per test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'snrlab.db'}"
        upgrade(url)
        yield url
        return
    name, url = _create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (for tests that run a service process)."""
    name, url = _create_pg_database()
    yield url
    _drop_pg_database(name)


@pytest.fixture
def engine(database_url):
    eng = make_engine(database_url)
    yield eng
    with eng.begin() as conn:  # empty every table: tests start from a blank database
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "results_version":  # its one row is the database's, kept by triggers
                conn.execute(table.delete())
    eng.dispose()


@pytest.fixture
def session_factory(engine):
    return make_sessionmaker(engine)


@pytest.fixture
def count_rows(session_factory):
    def count(table: str) -> int:
        with session_factory() as s:
            return s.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()

    return count


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    data_root = tmp_path / "images"
    data_root.mkdir()
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", data_roots=[data_root],
        dispatcher_enabled=False, dispatch_interval_s=0.05,
    )


@pytest.fixture
def token(session_factory) -> str:
    """An admin token (user "tests"): the tests that use it act on rows they insert themselves,
    owned by no one. Scopes and ownership are tests/service/test_ownership.py's."""
    with session_scope(session_factory) as s:
        _, tok = tokens_store.create_token(s, name="tests", scopes=("admin",))
    return tok


@pytest.fixture
def auth(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(settings, engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def pages(client, auth):
    """Every page of a cursor-paginated list, following `next_cursor` to the end."""
    def walk(path: str, key: str = "items", **params) -> list[list[dict]]:
        out, cursor = [], None
        while True:
            r = client.get("/api/v1" + path, headers=auth, params={**params, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            out.append(body[key])
            cursor = body["next_cursor"]
            if cursor is None:
                return out
            assert len(out) < 100, "the cursor does not advance"

    return walk


# ---------------------------------------------------------------- fake executor
@pytest.fixture
def fake_executor(settings) -> FakeExecutor:
    return FakeExecutor(settings.runs_dir)


# ---------------------------------------------------------------- live server
class LiveServer:
    """uvicorn in a thread on a free port (real sockets, real concurrency)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=200, backlog=256))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture
def live_server():
    return LiveServer
