"""50 concurrent POSTs against a real uvicorn server, on SQLite and on PostgreSQL."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from service.main import create_app

N = 50


def test_concurrent_posts_all_recorded_none_duplicated(settings, engine, auth, make_spec, count_rows, live_server):
    with live_server(create_app(settings)) as server:
        url = f"{server.url}/api/v1/experiments"

        def post(i: int, key: str | None = None) -> httpx.Response:
            headers = {**auth, **({"Idempotency-Key": key} if key else {})}
            with httpx.Client(timeout=60) as c:
                return c.post(url, json=make_spec(name=f"concurrent-{i}"), headers=headers)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(N) as pool:
            distinct = list(pool.map(post, range(N)))
            same_key = list(pool.map(lambda i: post(0, key="same"), range(20)))
        elapsed = time.perf_counter() - t0

    for r in distinct + same_key:
        assert r.status_code == 201, r.text  # never a 5xx, never "database is locked"
    assert len({r.json()["id"] for r in distinct}) == N
    assert len({r.json()["id"] for r in same_key}) == 1  # one experiment for one idempotency key
    assert count_rows("experiments") == N + 1
    assert count_rows("runs") == 2 * (N + 1)
    assert count_rows("idempotency_keys") == 1
    print(f"{N + 20} concurrent POSTs on {engine.dialect.name}: {elapsed:.2f}s")
