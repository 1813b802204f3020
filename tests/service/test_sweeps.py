"""Sweeps: the spec's 422s (both backends), then real Ray Tune driving runs: with a scripted
executor (Tune, SQL, dispatcher real; the training faked) for ASHA, cancel and the CLI, and one
real end-to-end sweep (Ray Train + evaluator) that survives a service restart."""
from __future__ import annotations

import copy
import sys
import time

import httpx
import pytest
import yaml
from sqlalchemy import select, text
from typer.testing import CliRunner

from service.app.main import create_app
from service.client.cli import app as cli_app
from service.domain.cluster import ClusterInfo, NodeInfo
from service.domain.sweep_spec import SweepSpec
from service.domain.sweeps import concurrency
from service.runtime.executor import SWEEP_ACTOR_PREFIX as ACTOR_PREFIX
from service.runtime.executor import JobState, RayExecutor
from service.store.models import Run, Sweep

API = "/api/v1"
NAMESPACE = "snrlab-sweep-tests"

BASE = {
    "name": "sweep",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 40, "batch_size": 16, "checkpoint_every": 20},
    "evaluation": {"steps": [5], "num_samples": 16, "metrics": ["fd_digits"], "analyses": False},
}


def sweep_spec(**overrides) -> dict:
    spec = {"base": copy.deepcopy(BASE), "search_space": {"weighting": {"grid": ["constant", "debias"]}},
            "metric": "fd_digits"}
    spec.update(overrides)
    return spec


def _detail(r: httpx.Response) -> tuple[list, str]:
    d = r.json()["detail"][0]
    return d["loc"], d["msg"]


# ---------------------------------------------------------------- the spec (SQLite and PostgreSQL)
def test_grid_sweep_is_queued_with_its_experiment(client, auth, count_rows):
    r = client.post(f"{API}/sweeps", json=sweep_spec(name="grid"), headers=auth)
    assert r.status_code == 201, r.text
    sw = r.json()
    assert sw["id"].startswith("swp_") and sw["experiment_id"].startswith("exp_") and sw["status"] == "queued"
    assert sw["spec"]["num_steps"] == 5 and sw["spec"]["sampler"] == "ddpm" and sw["mode"] == "min"  # resolved
    assert sw["trials"] == [] and sw["best"] is None
    assert count_rows("sweeps") == 1 and count_rows("experiments") == 1 and count_rows("runs") == 0
    assert client.get(f"{API}/experiments/{sw['experiment_id']}", headers=auth).json()["name"] == "grid"
    listed = client.get(f"{API}/sweeps", headers=auth).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == sw["id"]
    assert client.get(f"{API}/sweeps/swp_missing", headers=auth).status_code == 404
    assert client.post(f"{API}/sweeps", json=sweep_spec()).status_code == 401


def test_sweeps_page_by_cursor_newest_first(client, auth, pages):
    ids = [client.post(f"{API}/sweeps", json=sweep_spec(name=f"s{i}"), headers=auth).json()["id"] for i in range(5)]
    listed = pages("/sweeps", limit=2)
    assert [len(p) for p in listed] == [2, 2, 1] and [s["id"] for p in listed for s in p] == ids[::-1]
    assert client.get(f"{API}/sweeps", headers=auth, params={"limit": 2}).json()["total"] == 5


@pytest.mark.parametrize("overrides,loc,message", [
    ({"search_space": {"learning_rate": {"grid": [1e-3]}}}, ["body", "search_space", "learning_rate"],
     "unknown search-space key 'learning_rate'"),
    ({"search_space": {"weighting": {"grid": ["constant", "min_snr"]}, "weighting.gamma": {"grid": [1, 5]}}},
     ["body", "search_space", "weighting.gamma"], "unknown parameter(s) gamma for weighting 'constant'"),
    ({"search_space": {"weighting": {"grid": [{"name": "p2", "k": 1}, "min_snr"]}, "weighting.gamma": {"grid": [5, -3]}}},
     ["body", "search_space", "weighting.gamma"], "weighting 'min_snr' with {'gamma': -3.0} gives non-positive"),
    ({"scheduler": "asha"}, ["body", "scheduler"], "set base.evaluation.at_steps"),
    ({"search_space": {"lr": {"loguniform": [1e-4, 1e-2]}}}, ["body", "search_space", "lr"], "use search: random"),
    ({"search": "random", "search_space": {"steps": {"randint": [5, 60]}},
      "base": {**BASE, "evaluation": {**BASE["evaluation"], "at_steps": [10]}}},
     ["body", "search_space", "steps"], "at_steps: [10] not below training.steps=5"),
    ({"metric": "fid"}, ["body", "metric"], "metric 'fid' is not evaluated"),
    ({"base": {**BASE, "training": {**BASE["training"], "seeds": [0, 1]}}}, ["body", "base", "training", "seeds"],
     "exactly one seed"),
])
def test_bad_sweeps_are_422_naming_the_field_and_store_nothing(client, auth, count_rows, overrides, loc, message):
    r = client.post(f"{API}/sweeps", json=sweep_spec(**overrides), headers=auth)
    assert r.status_code == 422, r.text
    got_loc, msg = _detail(r)
    assert got_loc == loc and message in msg, (got_loc, msg)
    assert count_rows("sweeps") == 0 and count_rows("experiments") == 0


def test_optuna_search_needs_optuna(client, auth, monkeypatch):
    spec = sweep_spec(search="optuna", search_space={"lr": {"loguniform": [1e-4, 1e-2]}})
    assert client.post(f"{API}/sweeps", json=spec, headers=auth).status_code == 201  # a dependency of snrlab
    grid = {**spec, "search_space": {"lr": {"grid": [1e-3]}}}
    r = client.post(f"{API}/sweeps", json=grid, headers=auth)
    assert r.status_code == 422 and "search 'optuna' cannot take grid domains" in _detail(r)[1]
    monkeypatch.setitem(sys.modules, "optuna", None)  # a deployment without it: `import optuna` fails
    r = client.post(f"{API}/sweeps", json=spec, headers=auth)
    assert r.status_code == 422 and _detail(r)[0] == ["body", "search"]
    assert "optuna package, which is not installed" in _detail(r)[1] and "valid: grid, random" in _detail(r)[1]


def test_a_trial_that_cannot_fit_the_cluster_is_refused(settings, engine, auth, count_rows, fake_executor):
    """The dispatcher's capacity (here: 2 CPUs) decides: 3 workers per run can never start."""
    from fastapi.testclient import TestClient

    fake_executor.slots = 2
    live = settings.model_copy(update={"dispatcher_enabled": True})
    with TestClient(create_app(live, executor=fake_executor)) as c:
        spec = sweep_spec(base={**BASE, "resources": {"workers_per_run": 3}})
        r = c.post(f"{API}/sweeps", json=spec, headers=auth)
    assert r.status_code == 422, r.text
    loc, msg = _detail(r)
    assert loc == ["body", "base", "resources"] and "no trial could ever start" in msg
    assert count_rows("sweeps") == 0


def test_concurrency_is_capped_to_what_fits():
    spec = SweepSpec.model_validate(sweep_spec(max_concurrent_trials=8))
    assert concurrency(spec, capacity=2, max_concurrent_runs=None) == (
        2, "max_concurrent_trials capped from 8 to 2: the cluster fits 2 run(s) of 1 worker(s) at once")
    assert concurrency(spec, capacity=4, max_concurrent_runs=3)[0] == 3
    assert concurrency(SweepSpec.model_validate(sweep_spec()), capacity=2, max_concurrent_runs=None) == (2, None)


# ---------------------------------------------------------------- real Ray Tune, scripted runs
class ScriptedJob:
    def __init__(self, job):
        self.job, self.phase, self.error, self.results = job, "training", None, None
        self.cancelled = self.released = False


class ScriptedExecutor:
    """Runs nothing: the test sets each job's phase and results (`instant`: jobs succeed on their
    first poll, with a value that depends on the weighting, debias best). Tune, the sweep actor
    (through the real executor's sweep methods), SQL and the dispatcher around it are the real
    ones. Capacity: one run at a time."""

    values = {"constant": 2.0, "debias": 1.0}

    def __init__(self):
        self.jobs: dict[str, ScriptedJob] = {}
        self.instant = False
        ray = RayExecutor(namespace=NAMESPACE)
        self.submit_sweep, self.sync_sweep = ray.submit_sweep, ray.sync_sweep
        self.release_sweep, self.list_sweeps = ray.release_sweep, ray.list_sweeps

    def start(self): ...
    def shutdown(self): ...
    def maintain(self): ...
    def cluster(self): return ClusterInfo((NodeInfo(cpus=1, memory_bytes=8 * 2**30),))
    def submit(self, job): self.jobs.setdefault(job.name, ScriptedJob(job))
    def list_jobs(self): return [n for n, j in self.jobs.items() if not (j.cancelled or j.released)]

    def cancel(self, name):
        if name in self.jobs:
            self.jobs[name].cancelled = True

    def release(self, name):
        if name in self.jobs:
            self.jobs[name].released = True

    def poll(self, name) -> JobState:
        j = self.jobs.get(name)
        if j is None or j.cancelled or j.released:
            return JobState(phase="lost", error="gone")
        if self.instant:
            j.phase = "succeeded"
            j.results = [{"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits",
                          "value": self.values.get(j.job.run.train.weighting, 3.0)}]
        return JobState(phase=j.phase, error=j.error, results=j.results)

    def job_for(self, run_id: str) -> ScriptedJob:
        return [j for j in self.jobs.values() if j.job.run_id == run_id][-1]


@pytest.fixture
def tune_service(ray_session, postgres_url, tmp_path, live_server):
    """A live service (dispatcher + sweep manager) on PostgreSQL, the scripted executor and the
    shared Ray session. Yields (server, executor, ray, auth headers)."""
    from service.core.config import Settings

    settings = Settings(database_url=postgres_url, data_dir=tmp_path / "data", dispatch_interval_s=0.1,
                        ray_namespace=NAMESPACE)
    headers = {"Authorization": f"Bearer {_token(postgres_url)}"}
    executor = ScriptedExecutor()
    try:
        with live_server(create_app(settings, executor=executor)) as server:
            yield server, executor, ray_session, headers
    finally:
        _kill_sweep_actors(ray_session)


def _kill_sweep_actors(ray) -> None:
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE:
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass


def _wait(c: httpx.Client, path: str, done, timeout: float = 180, interval: float = 0.5) -> dict:
    deadline = time.time() + timeout
    while True:
        body = c.get(path).json()
        if done(body):
            return body
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting on {path}: {body}")
        time.sleep(interval)


def _actor_alive(ray, sweep_id: str) -> bool:
    return any(a["name"] == ACTOR_PREFIX + sweep_id for a in ray.util.list_named_actors(all_namespaces=True)
               if a["namespace"] == NAMESPACE)


@pytest.mark.ray
def test_asha_stops_the_worse_trial_and_its_run(tune_service):
    server, executor, ray, auth = tune_service
    spec = sweep_spec(scheduler="asha", max_concurrent_trials=4,
                      base={**BASE, "evaluation": {**BASE["evaluation"], "at_steps": [10]}})
    with httpx.Client(base_url=server.url + API, headers=auth, timeout=30) as c:
        r = c.post("/sweeps", json=spec)
        assert r.status_code == 201, r.text
        sw = r.json()
        assert sw["max_concurrent_trials"] == 1 and "capped from 4 to 1" in sw["message"]  # the cluster fits one run
        path = f"/sweeps/{sw['id']}"

        first = _wait(c, path, lambda b: [t["status"] for t in b["trials"]] == ["training"])["trials"][0]
        job = executor.job_for(first["run_id"])
        job.results = [{"train_step": 10, "num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 1.0},
                       {"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 0.5}]  # final: train_step 40
        job.phase = "succeeded"

        body = _wait(c, path, lambda b: len(b["trials"]) == 2 and b["trials"][1]["status"] == "training")
        second = body["trials"][1]
        assert body["trials"][0]["status"] == "succeeded" and body["best"]["run_id"] == first["run_id"]
        job = executor.job_for(second["run_id"])
        job.results = [{"train_step": 10, "num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 9.0}]

        done = _wait(c, path, lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
        stopped = done["trials"][1]
        assert stopped["status"] == "cancelled" and stopped["value"] == 9.0 and stopped["train_step"] == 10
        assert "stopped early by the sweep's asha scheduler at train_step 10" in stopped["error"]
        assert executor.job_for(second["run_id"]).cancelled  # the dispatcher stopped its work
        best = done["best"]
        assert best["run_id"] == first["run_id"] and best["value"] == 0.5 and best["train_step"] == 40
        assert best["config"] == {"weighting": first["config"]["weighting"]} and best["trial_id"] == first["trial_id"]
        assert {t["trial_id"] for t in done["trials"]} == {first["trial_id"], second["trial_id"]}
        lb = c.get("/leaderboard", params={"experiment": sw["experiment_id"]}).json()
        assert lb["columns"] == [first["config"]["weighting"]]  # only the run that finished
        deadline = time.time() + 30
        while _actor_alive(ray, sw["id"]) and time.time() < deadline:
            time.sleep(0.5)
        assert not _actor_alive(ray, sw["id"]), "the finished sweep's actor was not released"


@pytest.mark.ray
def test_cancel_stops_trial_runs_and_the_tune_actor(tune_service):
    server, executor, ray, auth = tune_service
    with httpx.Client(base_url=server.url + API, headers=auth, timeout=30) as c:
        sw = c.post("/sweeps", json=sweep_spec(name="to-cancel")).json()
        path = f"/sweeps/{sw['id']}"
        body = _wait(c, path, lambda b: [t["status"] for t in b["trials"]] == ["training"])
        assert _actor_alive(ray, sw["id"])
        cancelled = c.post(f"{path}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        run_id = body["trials"][0]["run_id"]
        _wait(c, f"/runs/{run_id}", lambda b: b["status"] == "cancelled", timeout=30)
        assert executor.job_for(run_id).cancelled
        deadline = time.time() + 30
        while _actor_alive(ray, sw["id"]) and time.time() < deadline:
            time.sleep(0.5)
        assert not _actor_alive(ray, sw["id"])
        time.sleep(3)  # a trial still being scheduled when the actor died must not have added a run
        final = c.get(path).json()
        assert final["status"] == "cancelled" and [t["run_id"] for t in final["trials"]] == [run_id]
        assert c.get(f"/experiments/{sw['experiment_id']}").json()["status"] == "cancelled"
        assert c.post(f"{path}/cancel").json()["status"] == "cancelled"  # idempotent


@pytest.mark.ray
def test_cli_sweep_waits_and_prints_the_best_configuration(tune_service, tmp_path, monkeypatch):
    server, executor, ray, auth = tune_service
    executor.instant = True
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_spec(name="cli")))
    monkeypatch.setenv("SNRLAB_URL", server.url)
    monkeypatch.setenv("SNRLAB_TOKEN", auth["Authorization"].split()[1])
    monkeypatch.setenv("COLUMNS", "250")
    out = CliRunner().invoke(cli_app, ["sweep", str(spec_file), "--wait", "--poll", "0.5"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().splitlines()[-1].startswith("swp_")
    assert "succeeded (2 trials)" in out.output and "best: weighting=debias: fd_digits = 1.0000 (T=5, ddpm" in out.output


@pytest.mark.ray
def test_optuna_search_samples_the_space_and_records_the_best(tune_service):
    server, executor, ray, auth = tune_service
    executor.instant = True
    spec = sweep_spec(name="optuna", search="optuna", num_samples=3, search_seed=1,
                      search_space={"weighting": {"choice": ["constant", "debias"]}, "lr": {"loguniform": [1e-4, 1e-2]}})
    with httpx.Client(base_url=server.url + API, headers=auth, timeout=30) as c:
        sw = c.post("/sweeps", json=spec).json()
        done = _wait(c, f"/sweeps/{sw['id']}", lambda b: b["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    assert len(done["trials"]) == 3 and all(t["status"] == "succeeded" for t in done["trials"])
    assert all(1e-4 <= t["config"]["lr"] <= 1e-2 and t["config"]["weighting"] in ("constant", "debias") for t in done["trials"])
    assert len({t["config"]["lr"] for t in done["trials"]}) == 3  # sampled, not repeated
    assert done["best"]["value"] == min(t["value"] for t in done["trials"])


# ---------------------------------------------------------------- real training, service restart
def _token(url: str) -> str:
    from service.store import tokens as tokens_store
    from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

    upgrade(url)
    engine = make_engine(url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, tok = tokens_store.create_token(s, name="sweep-e2e")
    engine.dispose()
    return tok


@pytest.mark.ray
def test_real_sweep_survives_a_service_restart_without_rerunning_finished_trials(ray_session, tmp_path, live_server):
    """2-trial grid over the weighting, one trial at a time. The service stops after the first
    trial's run succeeded and the sweep's actor is lost with it (as when Ray goes down with the
    service); a new service restores the Tuner: the finished trial is not rerun, the sweep
    completes, and the leaderboard shows both trials beside any experiment."""
    from service.core.config import Settings

    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    headers = {"Authorization": f"Bearer {_token(url)}"}
    settings = Settings(database_url=url, data_dir=tmp_path / "data", dispatch_interval_s=0.5, ray_namespace=NAMESPACE)
    spec = sweep_spec(name="e2e", max_concurrent_trials=1)
    try:
        with live_server(create_app(settings)) as server, \
                httpx.Client(base_url=server.url + API, headers=headers, timeout=30) as c:
            r = c.post("/sweeps", json=spec)
            assert r.status_code == 201, r.text
            sw = r.json()
            path = f"/sweeps/{sw['id']}"
            first = _wait(c, path, lambda b: b["trials"] and b["trials"][0]["status"] in ("succeeded", "failed"),
                          timeout=480, interval=1)["trials"][0]
            assert first["status"] == "succeeded", first
        ray_session.kill(ray_session.get_actor(ACTOR_PREFIX + sw["id"], namespace=NAMESPACE), no_restart=True)
        with live_server(create_app(settings)) as server, \
                httpx.Client(base_url=server.url + API, headers=headers, timeout=30) as c:
            done = _wait(c, path, lambda b: b["status"] in ("succeeded", "failed", "cancelled"), timeout=480, interval=1)
            assert done["status"] == "succeeded", done
            runs = [c.get(f"/runs/{t['run_id']}").json() for t in done["trials"]]
            lb = c.get("/leaderboard", params={"experiment": sw["experiment_id"], "metric": "fd_digits"}).json()
        assert len(done["trials"]) == 2 and len({t["trial_id"] for t in done["trials"]}) == 2
        assert {t["config"]["weighting"] for t in done["trials"]} == {"constant", "debias"}
        assert all(t["status"] == "succeeded" and t["value"] > 0 and t["train_step"] == 40 for t in done["trials"])
        assert runs[0]["id"] == first["run_id"] and [a["status"] for a in runs[0]["attempts"]] == ["succeeded"]
        assert done["best"]["value"] == min(t["value"] for t in done["trials"])
        assert done["best"]["config"]["weighting"] in ("constant", "debias")
        assert lb["columns"] == ["constant", "debias"] and len(lb["rows"]) == 1
        assert all(cell["n"] == 1 for cell in lb["rows"][0]["cells"].values())
        from service.store.db import make_engine

        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM runs")).scalar() == 2
            assert conn.execute(text("SELECT COUNT(*) FROM results")).scalar() == 2  # one final cell per trial
            assert conn.execute(select(Sweep.status)).scalar() == "succeeded"
            assert sorted(conn.execute(select(Run.sweep_trial)).scalars()) == sorted(t["trial_id"] for t in done["trials"])
        engine.dispose()
    finally:
        _kill_sweep_actors(ray_session)  # the sweep's actor and any run actor left in the test namespace
