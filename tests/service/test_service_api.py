"""REST API on SQLite and PostgreSQL: create/read/cancel, auth, idempotency, validation, limits."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app.main import create_app
from service.core.lifecycle import transition
from service.store import models
from service.store import runs as runs_store
from service.store import tokens as tokens_store
from service.store.db import session_scope

API = "/api/v1"


def post(client, body, auth, **headers):
    return client.post(f"{API}/experiments", json=body, headers={**auth, **headers})


def test_create_returns_ids_of_experiment_and_runs(client, auth, make_spec, count_rows):
    body = make_spec(training={**make_spec()["training"], "seeds": [0, 1]})
    r = post(client, body, auth)
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["id"].startswith("exp_") and exp["status"] == "queued"
    assert len(exp["run_ids"]) == 4 and all(i.startswith("run_") for i in exp["run_ids"])  # 2 weightings x 2 seeds
    assert {(x["weighting"], x["seed"]) for x in exp["runs"]} == {("constant", 0), ("constant", 1), ("debias", 0), ("debias", 1)}
    assert exp["progress"] == {"runs": 4, "by_status": {"queued": 4}, "fraction": 0.0}
    assert count_rows("runs") == 4

    got = client.get(f"{API}/experiments/{exp['id']}", headers=auth).json()
    assert got["run_ids"] == exp["run_ids"] and got["spec"]["name"] == "digits-weightings"
    listed = client.get(f"{API}/experiments", headers=auth).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == exp["id"]

    run = client.get(f"{API}/runs/{exp['run_ids'][0]}", headers=auth).json()
    assert run["status"] == "queued" and run["attempts"] == [] and run["current_step"] == 0
    assert run["config"]["weighting"] == "constant" and run["total_steps"] == 100
    assert run["checkpoint_path"] is None and run["error"] is None


def test_weighting_params_resolved_into_labels(client, auth, make_spec):
    body = make_spec(weightings=[{"name": "p2", "k": 1, "gamma": 1}, {"name": "min_snr"}])
    runs = post(client, body, auth).json()["runs"]
    assert [r["weighting"] for r in runs] == ["p2(gamma=1,k=1)", "min_snr(gamma=5)"]


@pytest.mark.parametrize("path", ["/experiments/exp_missing", "/runs/run_missing", "/runs/run_missing/metrics",
                                  "/runs/run_missing/results", "/runs/run_missing/artifacts"])
def test_unknown_ids_are_404(client, auth, path):
    r = client.get(API + path, headers=auth)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_cancel_unknown_is_404(client, auth):
    assert client.post(f"{API}/experiments/exp_nope/cancel", headers=auth).status_code == 404


# ---------------------------------------------------------------- auth
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_mutations_need_a_valid_token(client, make_spec, headers, count_rows):
    r = client.post(f"{API}/experiments", json=make_spec(), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.post(f"{API}/experiments/exp_x/cancel", headers=headers).status_code == 401
    assert count_rows("experiments") == 0


def test_reads_need_a_token_unless_public(client, settings, engine, auth):
    assert client.get(f"{API}/experiments").status_code == 401
    assert client.get(f"{API}/experiments", headers=auth).status_code == 200
    assert client.get(f"{API}/healthz").json()["status"] == "ok"  # health is always public
    public = settings.model_copy(update={"public_reads": True})
    with TestClient(create_app(public)) as c:
        assert c.get(f"{API}/experiments").status_code == 200
        assert c.post(f"{API}/experiments", json={}).status_code == 401


def test_revoked_token_is_refused(client, session_factory, make_spec):
    with session_scope(session_factory) as s:
        row, tok = tokens_store.create_token(s, name="ci")
    assert post(client, make_spec(), {"Authorization": f"Bearer {tok}"}).status_code == 201
    with session_scope(session_factory) as s:
        tokens_store.revoke_token(s, token_id=row.id)
    assert post(client, make_spec(), {"Authorization": f"Bearer {tok}"}).status_code == 401


def test_tokens_are_stored_hashed(session_factory):
    with session_scope(session_factory) as s:
        row, tok = tokens_store.create_token(s, name="x")
    assert tok.startswith("snr_") and len(tok) > 40
    with session_factory() as s:
        stored = tokens_store.list_tokens(s)[0]
    assert stored.token_hash == tokens_store.hash_token(tok) and tok not in stored.token_hash


# ---------------------------------------------------------------- idempotency
def test_idempotency_key_replays_same_experiment(client, auth, make_spec, count_rows):
    first = post(client, make_spec(), auth, **{"Idempotency-Key": "k1"})
    again = post(client, make_spec(), auth, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["run_ids"] == first.json()["run_ids"]
    assert count_rows("experiments") == 1 and count_rows("runs") == 2


def test_idempotency_key_with_other_body_is_409(client, auth, make_spec, count_rows):
    assert post(client, make_spec(), auth, **{"Idempotency-Key": "k2"}).status_code == 201
    r = post(client, make_spec(name="other"), auth, **{"Idempotency-Key": "k2"})
    assert r.status_code == 409 and "Idempotency-Key" in r.json()["error"]["message"]
    assert count_rows("experiments") == 1
    assert post(client, make_spec(name="other"), auth, **{"Idempotency-Key": "k3"}).status_code == 201


# ---------------------------------------------------------------- validation
def _set(body: dict, path: str, value) -> dict:
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[leaf] = value
    return body


INVALID = [
    ("weightings", [{"name": "nope"}], ["body", "weightings", 0, "name"], "valid: constant, curriculum, debias"),
    ("weightings", [{"name": "p2", "kk": 2}], ["body", "weightings", 0], "valid parameters: k, gamma"),
    ("datasets", [{"name": "mnist"}], ["body", "datasets", 0, "name"], "Input should be 'digits', 'colors', 'folder' or 'cifar10'"),
    ("model", {"preset": "huge"}, ["body", "model", "preset"], "valid: "),
    ("evaluation.steps", [5, 2000], ["body", "evaluation"], "T=2000 exceeds training.num_timesteps=1000"),
    ("weightings", [], ["body", "weightings"], "at least 1"),
    ("datasets", [], ["body", "datasets"], "at least 1"),
    ("evaluation.steps", [], ["body", "evaluation", "steps"], "at least 1"),
    ("training.seeds", [], ["body", "training", "seeds"], "at least 1"),
    ("training.steps", -5, ["body", "training", "steps"], "greater than or equal to 1"),
    ("evaluation.samplers", ["euler"], ["body", "evaluation", "samplers", 0], "valid samplers: ddpm, ddim"),
    ("evaluation.metrics", ["fid2"], ["body", "evaluation", "metrics", 0], "valid metrics"),
    ("evaluation.metrics", ["fd_colors"], ["body", "evaluation"], "use fd_digits"),
    ("evaluation.at_steps", [50, 10_000], ["body", "evaluation"], "[10000] not below training.steps"),
    ("evaluation.at_steps", [50, 50], ["body", "evaluation", "at_steps"], "unique"),
    ("evaluation.at_steps", [0], ["body", "evaluation", "at_steps", 0], "greater than 0"),
    ("training.lr", 0, ["body", "training", "lr"], "greater than 0"),
    ("surprise", 1, ["body", "surprise"], "Extra inputs"),
]


@pytest.mark.parametrize("path,value,loc,msg", INVALID, ids=[f"{p}={v}" for p, v, *_ in INVALID])
def test_invalid_specs_are_422_naming_the_field(client, auth, make_spec, path, value, loc, msg, count_rows):
    r = post(client, _set(make_spec(), path, value), auth)
    assert r.status_code == 422, r.text
    details = r.json()["detail"]
    assert any(d["loc"] == loc and msg in d["msg"] for d in details), details
    assert count_rows("experiments") == 0 and count_rows("runs") == 0


def test_folder_dataset_must_be_under_data_roots(client, auth, make_spec, settings, tmp_path, count_rows):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    body = make_spec(datasets=[{"name": "folder", "path": str(outside)}], evaluation={**make_spec()["evaluation"], "metrics": ["fd_folder"]})
    r = post(client, body, auth)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "datasets", 0, "path"]
    assert "outside SNRLAB_DATA_ROOTS" in r.json()["detail"][0]["msg"]
    sneaky = make_spec(datasets=[{"name": "folder", "path": str(settings.data_roots[0] / ".." / "elsewhere")}],
                       evaluation={**make_spec()["evaluation"], "metrics": ["fd_folder"]})
    assert post(client, sneaky, auth).status_code == 422
    assert count_rows("experiments") == 0
    inside = settings.data_roots[0] / "cats"
    inside.mkdir()
    ok = make_spec(datasets=[{"name": "folder", "path": str(inside)}], evaluation={**make_spec()["evaluation"], "metrics": ["fd_folder"]})
    r = post(client, ok, auth)
    assert r.status_code == 201, r.text
    assert r.json()["runs"][0]["dataset"] == "folder:cats"


def test_body_over_1mib_is_413(client, auth, make_spec, count_rows):
    body = make_spec(name="x" * 100)
    padding = " " * (1 << 20)
    raw = ('{"pad": "' + padding + '", ' + __import__("json").dumps(body)[1:]).encode()
    r = client.post(f"{API}/experiments", content=raw, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: counted while streaming
        yield raw[: len(raw) // 2]
        yield raw[len(raw) // 2:]

    r = client.post(f"{API}/experiments", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert count_rows("experiments") == 0


def test_malformed_json_is_400_with_the_error_body(client, auth):
    r = client.post(f"{API}/experiments", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request" and "not valid JSON" in r.json()["error"]["message"]


def test_unknown_paths_wrong_methods_and_options_use_the_error_body(client, auth):
    r = client.get(f"{API}/nope", headers=auth)
    assert r.status_code == 404 and r.json() == {"error": {"code": "not_found", "message": f"no such path: {API}/nope"}}
    r = client.delete(f"{API}/experiments", headers=auth)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, OPTIONS, POST"  # both routes of the path, not just the first
    assert client.options(f"{API}/experiments").headers["allow"] == "GET, OPTIONS, POST"
    assert client.options(f"{API}/experiments/exp_x/cancel").headers["allow"] == "OPTIONS, POST"
    assert client.options(f"{API}/experiments/exp_x").status_code == 204
    assert client.options(f"{API}/nope").status_code == 404


# One change to a small valid spec each, as a hostile client sends them (raw JSON text, so NaN and
# lone surrogates arrive as Python's and JavaScript's encoders write them).
HOSTILE = [
    ('"weightings": [{"name": "constant"}', '"weightings": [{"name": "p2", "gamma": NaN}', ["body", "weightings", 0], "finite"),
    ('"weightings": [{"name": "constant"}', '"weightings": [{"name": "p2", "gamma": Infinity}', ["body", "weightings", 0], "finite"),
    ('"weightings": [{"name": "constant"}', '"weightings": [{"name": "p2", "k": -Infinity}', ["body", "weightings", 0], "finite"),
    ('"batch_size": 16', '"batch_size": 16, "lr": NaN', ["body", "training", "lr"], "finite number"),
    ('"name": "digits-weightings"', '"name": "a\\u0000b"', ["body", "name"], "NUL byte"),
    ('"name": "digits-weightings"', '"name": "\\ud800"', ["body", "name"], "string"),
    ('"samplers": ["ddpm"]', '"samplers": ["dd\\u0000pm"]', ["body", "evaluation", "samplers", 0], "unknown sampler"),
    ('"datasets": [{"name": "digits"}]', '"datasets": [{"name": "folder", "path": "/x\\u0000y"}]', ["body", "datasets", 0, "path"], "NUL byte"),
    ('"weightings": [{"name": "constant"}', '"weightings": [{"name": "\\udfff"}', ["body", "weightings", 0, "name"], "string"),
]


@pytest.mark.parametrize("old,new,loc,msg", HOSTILE, ids=[h[1][:40] for h in HOSTILE])
def test_hostile_numbers_and_strings_are_422_naming_the_field(client, auth, make_spec, old, new, loc, msg, count_rows):
    import json

    text = json.dumps(make_spec())
    assert old in text
    r = client.post(f"{API}/experiments", content=text.replace(old, new, 1).encode(),
                    headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    details = r.json()["detail"]  # the body itself is valid JSON, whatever the input was
    assert any(d["loc"] == loc and msg in d["msg"] for d in details), details
    assert count_rows("experiments") == 0 and count_rows("runs") == 0


def test_hostile_query_and_path_values_are_422(client, auth):
    for path in (f"{API}/leaderboard?dataset=%00", f"{API}/leaderboard?metric=a%00b", f"{API}/runs/%00",
                 f"{API}/experiments/exp%00x", f"{API}/sweeps/%00/cancel", "/leaderboard?sampler=%00", "/runs/%00x"):
        method = client.post if path.endswith("/cancel") else client.get
        r = method(path, headers=auth)
        assert r.status_code == 422, (path, r.status_code, r.text)


def test_a_long_folder_name_fits_its_column(client, auth, make_spec, settings, count_rows):
    inside = settings.data_roots[0] / ("cats-" + "x" * 150)
    inside.mkdir()
    body = make_spec(datasets=[{"name": "folder", "path": str(inside)}], evaluation={**make_spec()["evaluation"], "metrics": ["fd_folder"]})
    r = post(client, body, auth)
    assert r.status_code == 201, r.text
    label = r.json()["runs"][0]["dataset"]
    assert len(label) == 100 and label.startswith("folder:cats-xxx")
    assert client.get(f"{API}/leaderboard", params={"dataset": label}, headers=auth).status_code == 200


def test_data_roots_see_the_path_the_reader_will(client, auth, make_spec, settings, tmp_path, monkeypatch, count_rows):
    """`~` expands as the trainer expands it, relative paths are refused, symlinks are resolved,
    and the spec keeps the normalised path, so the trainer reads exactly what was checked."""
    root = settings.data_roots[0]
    (root / "cats").mkdir()
    home = tmp_path / "home"
    (home / "private").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))

    def folder(path):
        return make_spec(datasets=[{"name": "folder", "path": path}], evaluation={**make_spec()["evaluation"], "metrics": ["fd_folder"]})

    r = post(client, folder("~/private"), auth)  # under $HOME, outside the roots
    assert r.status_code == 422 and str(home / "private") in r.json()["detail"][0]["msg"]
    r = post(client, folder("images/cats"), auth)
    assert r.status_code == 422 and "absolute" in r.json()["detail"][0]["msg"]
    (root / "escape").symlink_to(home / "private")  # inside the roots by name, outside in fact
    assert post(client, folder(str(root / "escape")), auth).status_code == 422
    assert count_rows("experiments") == 0
    (home / "link").symlink_to(root / "cats")  # outside by name, inside in fact
    r = post(client, folder("~/link"), auth)
    assert r.status_code == 201, r.text
    run = client.get(f"{API}/runs/{r.json()['run_ids'][0]}", headers=auth).json()
    assert run["config"]["dataset"]["path"] == str((root / "cats").resolve())
    assert r.json()["spec"]["datasets"][0]["path"] == str((root / "cats").resolve())


LIMITS = [
    ("training.steps", 10_000_000, ["body", "training", "steps"], "SNRLAB_MAX_STEPS=1000000"),
    ("evaluation.num_samples", 1_000_000, ["body", "evaluation", "num_samples"], "SNRLAB_MAX_NUM_SAMPLES=50000"),
    ("training.seeds", list(range(3)), ["body"], "SNRLAB_MAX_RUNS_PER_EXPERIMENT=4"),
]


@pytest.mark.parametrize("path,value,loc,msg", LIMITS, ids=[p for p, *_ in LIMITS])
def test_specs_over_the_services_limits_are_422_naming_the_limit(settings, engine, auth, make_spec, path, value, loc, msg,
                                                                  count_rows):
    with TestClient(create_app(settings.model_copy(update={"max_runs_per_experiment": 4}))) as c:
        r = post(c, _set(make_spec(), path, value), auth)
    assert r.status_code == 422, r.text
    assert any(d["loc"] == loc and msg in d["msg"] for d in r.json()["detail"]), r.json()
    assert count_rows("experiments") == 0


def test_a_spec_no_node_can_hold_is_422_naming_the_field(settings, engine, auth, make_spec, fake_executor, count_rows):
    """The dispatcher's view of the cluster (here one 8 GiB node): a run's estimated memory per
    worker must fit the largest node."""
    live = settings.model_copy(update={"dispatcher_enabled": True, "dispatch_interval_s": 60})
    big = make_spec(datasets=[{"name": "colors", "resolution": 1024, "num_images": 64}], model={"preset": "adm-256-light"},
                    training={"steps": 10, "batch_size": 65536, "seeds": [0]},
                    evaluation={"steps": [5], "num_samples": 64, "metrics": ["fd_colors"]})
    with TestClient(create_app(live, executor=fake_executor)) as c:
        r = post(c, big, auth)
        assert r.status_code == 422, r.text
        [d] = r.json()["detail"]
        assert d["loc"] == ["body", "training", "batch_size"] and "more than the largest Ray node offers (8 GiB)" in d["msg"]
        assert post(c, make_spec(), auth).status_code == 201  # the tiny preset fits
    assert count_rows("experiments") == 1


def test_unexpected_errors_are_500_without_traceback(settings, engine, auth, make_spec, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    from service.api import experiments as experiments_api

    monkeypatch.setattr(experiments_api.experiments, "create_experiment", boom)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = post(c, make_spec(), auth)
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "Traceback" not in r.text and "secret" not in r.text


def test_a_failing_insert_leaves_no_partial_rows(client, auth, make_spec, count_rows, monkeypatch):
    real = models.IdempotencyKey

    def broken(**kw):  # the last insert of the transaction fails
        raise RuntimeError("disk full")

    from service.store import experiments as experiments_store

    monkeypatch.setattr(experiments_store, "IdempotencyKey", broken)
    r = post(client, make_spec(), auth, **{"Idempotency-Key": "k"})
    assert r.status_code == 500
    monkeypatch.setattr(experiments_store, "IdempotencyKey", real)
    assert count_rows("experiments") == 0 and count_rows("runs") == 0


# ---------------------------------------------------------------- cancel, results, leaderboard
def test_cancel_queued_experiment(client, auth, make_spec):
    exp = post(client, make_spec(), auth).json()
    r = client.post(f"{API}/experiments/{exp['id']}/cancel", headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert all(x["status"] == "cancelled" and x["finished_at"] for x in body["runs"])
    again = client.post(f"{API}/experiments/{exp['id']}/cancel", headers=auth)  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def _finish(session_factory, run_ids, values):
    """Mark runs succeeded with fd_digits results (what the dispatcher does)."""
    from service.core.lifecycle import RunStatus

    with session_scope(session_factory) as s:
        for run_id, value in zip(run_ids, values):
            run = runs_store.get_run(s, run_id=run_id)
            transition(run, RunStatus.TRAINING)
            runs_store.upsert_metrics(s, run_id=run_id, points=[{"step": 50, "loss": 0.5}, {"step": 100, "loss": 0.25}])
            runs_store.record_results(s, run_id=run_id, results=[
                {"num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": value * t, "num_gen": 64, "extractor": "fd_digits"}
                for t in (5, 20)
            ])
            transition(run, RunStatus.SUCCEEDED)


def test_results_metrics_and_leaderboard(client, auth, make_spec, session_factory):
    exp = post(client, _set(make_spec(), "training.seeds", [0, 1]), auth).json()
    by = {(r["weighting"], r["seed"]): r["id"] for r in exp["runs"]}
    ids = [by[("constant", 0)], by[("constant", 1)], by[("debias", 0)], by[("debias", 1)]]
    _finish(session_factory, ids, [2.0, 4.0, 1.0, 1.0])

    m = client.get(f"{API}/runs/{ids[0]}/metrics", headers=auth).json()
    assert [p["step"] for p in m["points"]] == [50, 100] and m["points"][1]["values"]["loss"] == 0.25
    res = client.get(f"{API}/runs/{ids[0]}/results", headers=auth).json()
    assert res["status"] == "succeeded" and [(x["num_steps"], x["value"]) for x in res["results"]] == [(5, 10.0), (20, 40.0)]
    assert client.get(f"{API}/experiments/{exp['id']}", headers=auth).json()["status"] == "succeeded"

    lb = client.get(f"{API}/leaderboard", params={"dataset": "digits", "metric": "fd_digits", "sampler": "ddpm"}, headers=auth).json()
    assert lb["columns"] == ["constant", "debias"] and lb["lower_is_better"] is True
    assert [(row["dataset"], row["num_steps"]) for row in lb["rows"]] == [("digits", 5), ("digits", 20)]
    row5 = lb["rows"][0]
    assert row5["cells"]["constant"]["mean"] == pytest.approx(15.0) and row5["cells"]["constant"]["n"] == 2
    assert row5["cells"]["constant"]["std"] == pytest.approx(7.0710678)  # sample std of 10, 20
    assert row5["cells"]["debias"] == {**row5["cells"]["debias"], "mean": 5.0, "std": 0.0, "n": 2, "best": True,
                                       "num_gen": 64, "extractor": "fd_digits"}
    assert row5["best"] == "debias" and row5["cells"]["constant"]["best"] is False
    assert lb["provenance"]["experiment_ids"] == [exp["id"]] and len(lb["provenance"]["config_hashes"]) == 1
    assert lb["provenance"]["code_versions"][0].startswith("0.1.0")
    assert client.get(f"{API}/leaderboard", params={"dataset": "colors"}, headers=auth).json()["rows"] == []


def test_artifacts_are_served_and_confined(client, auth, make_spec, settings):
    run_id = post(client, make_spec(), auth).json()["run_ids"][0]
    art = settings.runs_dir / run_id / "artifacts"
    (art / "grids").mkdir(parents=True)
    (art / "grids" / "T5.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (settings.runs_dir / run_id / "secret.txt").write_text("no")
    assert client.get(f"{API}/runs/{run_id}/artifacts", headers=auth).json() == ["grids/T5.png"]
    r = client.get(f"{API}/runs/{run_id}/artifacts/grids/T5.png", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    assert client.get(f"{API}/runs/{run_id}/artifacts/../secret.txt", headers=auth).status_code == 404
    assert client.get(f"{API}/runs/{run_id}/artifacts/%2e%2e/secret.txt", headers=auth).status_code == 404
    assert client.get(f"{API}/runs/{run_id}/artifacts/nope.png", headers=auth).status_code == 404


def test_openapi_and_health(client):
    doc = client.get("/openapi.json").json()
    assert "/api/v1/experiments" in doc["paths"] and "/api/v1/leaderboard" in doc["paths"]
    assert client.get("/docs").status_code == 200
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["dispatcher"] == "disabled"
