"""Property-based API fuzzing from /openapi.json: no input makes the service answer 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service.app.main import create_app
from service.core.config import Settings
from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{root / 'fuzz.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, TOKEN["value"] = tokens_store.create_token(s, name="fuzz")
    engine.dispose()
    app = create_app(Settings(database_url=url, data_dir=root / "data", dispatcher_enabled=False, data_roots=[root]))
    with TestClient(app):  # runs the lifespan (migrations, session factory) once for the module
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def _fuzz(schema, headers: dict[str, str], max_examples: int) -> list[str]:
    failures, calls, operations = [], [], 0
    for result in schema.get_all_operations():
        operations += 1
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            calls.append(case.call_and_validate(headers=headers, checks=[not_a_server_error]).status_code)

        try:
            check()
        except Exception as e:  # noqa: BLE001 - report every operation, not just the first
            failures.append(f"{operation.label}: {e}")
    assert operations >= 10 and len(calls) >= 5 * operations, (operations, len(calls))
    return failures


def test_no_server_errors(api_schema):
    # (schemathesis' own pytest plugin does not load under pytest 9, so we drive Hypothesis here)
    failures = _fuzz(api_schema, {"Authorization": f"Bearer {TOKEN['value']}"}, max_examples=40)
    assert not failures, "\n\n".join(failures)


def test_no_server_errors_without_auth(api_schema):
    assert not _fuzz(api_schema, {}, max_examples=10)
