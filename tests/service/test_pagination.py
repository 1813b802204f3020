"""Cursor pagination of the lists that grow (experiments, sweeps' shape, an experiment's runs, a
run's results and metrics), on SQLite and PostgreSQL: every row exactly once and in order, also
while rows are added between pages; a cursor that was not handed out is a 422 naming `cursor`."""
from __future__ import annotations

import pytest

from service.store import runs as runs_store
from service.store.db import session_scope
from service.store.pages import decode_cursor, encode_cursor

API = "/api/v1"


def test_experiments_page_by_cursor_newest_first_without_skips_or_repeats(client, auth, make_spec, pages):
    ids = [client.post(f"{API}/experiments", json=make_spec(name=f"e{i}"), headers=auth).json()["id"] for i in range(7)]
    listed = pages("/experiments", limit=3)
    assert [len(p) for p in listed] == [3, 3, 1]
    assert [e["id"] for p in listed for e in p] == ids[::-1]

    first = client.get(f"{API}/experiments", headers=auth, params={"limit": 3}).json()
    late = client.post(f"{API}/experiments", json=make_spec(name="late"), headers=auth).json()["id"]
    rest = client.get(f"{API}/experiments", headers=auth, params={"limit": 10, "cursor": first["next_cursor"]}).json()
    assert late not in [e["id"] for e in rest["items"]]  # newer than the cursor: on page one, not repeated here
    assert [e["id"] for e in first["items"] + rest["items"]] == ids[::-1]
    assert rest["total"] == 8 and rest["next_cursor"] is None


def test_an_experiments_runs_page_in_index_order(client, auth, make_spec, pages):
    body = make_spec(training={**make_spec()["training"], "seeds": [0, 1, 2]})  # 2 weightings x 3 seeds
    exp = client.post(f"{API}/experiments", json=body, headers=auth).json()
    listed = pages(f"/experiments/{exp['id']}/runs", limit=4)
    assert [len(p) for p in listed] == [4, 2]
    assert [r["index"] for p in listed for r in p] == list(range(6))
    assert [r["id"] for p in listed for r in p] == exp["run_ids"]
    assert client.get(f"{API}/experiments/exp_nope/runs", headers=auth).status_code == 404


def test_results_and_metrics_page(client, auth, make_spec, session_factory, pages):
    run_id = client.post(f"{API}/experiments", json=make_spec(), headers=auth).json()["run_ids"][0]
    cells = [{"num_steps": t, "sampler": s, "metric": "fd_digits", "value": float(t), "train_step": 100}
             for t in (2, 5, 10, 20, 50) for s in ("ddim", "ddpm")]
    with session_scope(session_factory) as s:
        runs_store.record_results(s, run_id=run_id, results=cells)
        runs_store.upsert_metrics(s, run_id=run_id, points=[{"step": k, "loss": 1.0 / k} for k in range(1, 8)])
    everything = client.get(f"{API}/runs/{run_id}/results", headers=auth).json()
    assert len(everything["results"]) == 10 and everything["next_cursor"] is None
    listed = pages(f"/runs/{run_id}/results", key="results", limit=3)
    assert [len(p) for p in listed] == [3, 3, 3, 1]
    assert [r for p in listed for r in p] == everything["results"]

    seen, since = [], -1
    while since is not None:
        body = client.get(f"{API}/runs/{run_id}/metrics", headers=auth, params={"since_step": since, "limit": 3}).json()
        seen += [p["step"] for p in body["points"]]
        since = body["next_since_step"]
    assert seen == list(range(1, 8))


@pytest.mark.parametrize("cursor", ["garbage", encode_cursor(["only-one-value"]), encode_cursor([True, "x"]),
                                    encode_cursor([5, "exp_x"]), encode_cursor(["2026-12-02", "exp_x"]),
                                    "x" * 1001, "a b", "%00"])
@pytest.mark.parametrize("path", ["/experiments", "/sweeps"])
def test_a_cursor_not_handed_out_is_a_422_naming_it(client, auth, cursor, path):
    r = client.get(API + path, headers=auth, params={"cursor": cursor})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_cursors_round_trip_their_sort_key():
    from datetime import datetime, timezone

    key = (datetime(2026, 12, 2, 11, 5, 7, 123456, tzinfo=timezone.utc), "exp_abc", 3)
    assert decode_cursor(encode_cursor(key), (datetime, str, int)) == list(key)
