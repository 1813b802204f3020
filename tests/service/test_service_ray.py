"""The real path: a real service, real Ray (the shared `ray_session`), the real trainer and
evaluator. Tiny preset, ~100 steps, the fast metric (fd_digits)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.app.main import create_app
from service.core.config import Settings
from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

API = "/api/v1"
NAMESPACE = "snrlab"

TINY = {
    "name": "e2e-tiny",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 100, "batch_size": 16, "seeds": [0], "checkpoint_every": 50},
    "evaluation": {"steps": [5, 20], "samplers": ["ddpm"], "num_samples": 64, "metrics": ["fd_digits"],
                   "analysis_images": 4, "analysis_stride": 100},
}


def _kill_snrlab_actors(ray) -> None:
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE and entry["name"].startswith("snrlab-run_"):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass


pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One SNRLAB_DATA_DIR for the Ray tests: the evaluator's cached extractor and reference
    statistics are built once, not per test (run directories are per run id anyway)."""
    return tmp_path_factory.mktemp("ray-data")


@pytest.fixture
def ray_cluster(ray_session):
    yield ray_session
    _kill_snrlab_actors(ray_session)  # never leave detached work behind


def _wait(client: httpx.Client, path: str, done, timeout: float, interval: float = 1.0) -> dict:
    deadline = time.time() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting on {path}: {body}")
        time.sleep(interval)


def _print_timeline(c: httpx.Client, exp: dict, t0: float) -> None:
    from datetime import datetime

    def rel(ts: str | None) -> str:
        return f"{datetime.fromisoformat(ts).timestamp() - t0:6.1f}s" if ts else "     -"

    for run_id in exp["run_ids"]:
        run = c.get(f"/runs/{run_id}").json()
        pts = c.get(f"/runs/{run_id}/metrics").json()["points"]
        first, last = (pts[0]["values"].get("time"), pts[-1]["values"].get("time")) if pts else (None, None)
        print(f"{run['weighting']:>10}: started {rel(run['started_at'])}, first log "
              f"{(first or t0) - t0:6.1f}s, last log {(last or t0) - t0:6.1f}s, finished {rel(run['finished_at'])}")


def _settings(data_dir: Path, database_url: str, **kw) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, dispatch_interval_s=0.5, **kw)


def _token(database_url: str) -> str:
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, tok = tokens_store.create_token(s, name="e2e")
    engine.dispose()
    return tok


def test_end_to_end_tiny_experiment_reaches_the_leaderboard(ray_cluster, tmp_path, shared_data_dir, live_server):
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    headers = {"Authorization": f"Bearer {_token(url)}"}
    app = create_app(_settings(shared_data_dir, url))
    with live_server(app) as server, httpx.Client(base_url=server.url + API, headers=headers, timeout=30) as c:
        t0 = time.time()
        # at_steps: the step-50 snapshot is scored while training goes on (the paper's Fig. 7a)
        r = c.post("/experiments", json={**TINY, "evaluation": {**TINY["evaluation"], "at_steps": [50]}})
        assert r.status_code == 201, r.text
        exp = _wait(c, f"/experiments/{r.json()['id']}", lambda b: b["status"] in ("succeeded", "failed", "cancelled"),
                    timeout=900)  # a deadline for a hung run, not a speed target (2 shared cores)
        assert exp["status"] == "succeeded", exp
        _print_timeline(c, exp, t0)
        lb = c.get("/leaderboard", params={"dataset": "digits", "metric": "fd_digits", "sampler": "ddpm"}).json()
        assert lb["columns"] == ["constant", "debias"]
        assert [(row["train_step"], row["num_steps"]) for row in lb["rows"]] == [(100, 5), (100, 20)]
        every = c.get("/leaderboard", params={"metric": "fd_digits", "train_steps": "all"}).json()
        assert [(row["train_step"], row["num_steps"]) for row in every["rows"]] == [(50, 5), (50, 20), (100, 5), (100, 20)]
        assert every["rows"][0]["cells"]["constant"]["mean"] != every["rows"][2]["cells"]["constant"]["mean"]
        for row in lb["rows"]:
            assert set(row["cells"]) == {"constant", "debias"} and sum(c["best"] for c in row["cells"].values()) == 1
            assert all(c["n"] == 1 and c["mean"] > 0 for c in row["cells"].values())
        run = c.get(f"/runs/{exp['run_ids'][0]}").json()
        assert run["current_step"] == 100 and run["checkpoint_path"] and len(run["attempts"]) == 1
        assert run["usage"]["device"] == "cpu" and run["usage"]["wall_s"] > 0  # accounting recorded with the run
        metrics = c.get(f"/runs/{run['id']}/metrics").json()["points"]
        assert [p["step"] for p in metrics] == [25, 50, 75, 100] and "mse_q0" in metrics[-1]["values"]
        results = c.get(f"/runs/{run['id']}/results").json()["results"]
        assert sorted((r["train_step"], r["num_steps"]) for r in results) == [(50, 5), (50, 20), (100, 5), (100, 20)]
        artifacts = c.get(f"/runs/{run['id']}/artifacts").json()
        assert "samples_T5.png" in artifacts and "analyses.json" in artifacts, artifacts
        png = c.get(f"/runs/{run['id']}/artifacts/samples_T5.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        # the features were kept: a new metric for the finished runs, without sampling again
        for run_id in exp["run_ids"]:
            done = c.post(f"/runs/{run_id}/rescore", json={"metrics": ["fd_digits", "cs_digits"]})
            assert done.status_code == 200 and done.json()["added"] == 4, done.text  # 2 checkpoints x 2 T; fd_digits kept
        scored = c.get("/leaderboard", params={"metric": "cs_digits"}).json()
        assert [(row["num_steps"], sorted(row["cells"])) for row in scored["rows"]] == [(5, ["constant", "debias"]),
                                                                                      (20, ["constant", "debias"])]
        again = {r["num_steps"]: r["value"] for r in c.get(f"/runs/{run['id']}/results").json()["results"]
                 if r["metric"] == "fd_digits" and r["train_step"] == 100}
        assert again == {row["num_steps"]: row["cells"]["constant"]["mean"] for row in lb["rows"]}  # unchanged
        assert c.post(f"/runs/{exp['run_ids'][0]}/rescore", json={"metrics": ["fd_colors"]}).status_code == 422


def test_cancel_stops_ray_work_within_seconds(ray_cluster, tmp_path, shared_data_dir, live_server):
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    headers = {"Authorization": f"Bearer {_token(url)}"}
    spec = {**TINY, "name": "long", "evaluation": {**TINY["evaluation"], "analyses": False}, "weightings": [{"name": "constant"}], "training": {**TINY["training"], "steps": 100_000}}
    app = create_app(_settings(shared_data_dir, url))
    with live_server(app) as server, httpx.Client(base_url=server.url + API, headers=headers, timeout=30) as c:
        exp = c.post("/experiments", json=spec).json()
        run_path = f"/runs/{exp['run_ids'][0]}"
        _wait(c, run_path, lambda b: b["current_step"] > 0, timeout=240)
        assert ray_cluster.available_resources().get("CPU", 0) < 2  # a Train worker holds a CPU
        t0 = time.time()
        assert c.post(f"/experiments/{exp['id']}/cancel").status_code == 200
        run = _wait(c, run_path, lambda b: b["status"] == "cancelled", timeout=30, interval=0.2)
        cancelled_after = time.time() - t0
        names = [a["name"] for a in ray_cluster.util.list_named_actors(all_namespaces=True)]
        assert not any(n.startswith(f"snrlab-{run['id']}") for n in names)
        deadline = time.time() + 30
        while ray_cluster.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
            time.sleep(0.2)
        freed_after = time.time() - t0
        assert ray_cluster.available_resources().get("CPU", 0) == 2, "the Train worker's CPU was not freed"
        assert run["attempts"][0]["status"] == "cancelled" and run["finished_at"]
        print(f"cancel: marked after {cancelled_after:.1f}s, CPUs freed after {freed_after:.1f}s")
        assert cancelled_after < 10 and freed_after < 20


class ServiceProcess:
    """`snrlab serve` as a child process we can kill -9."""

    def __init__(self, env: dict[str, str], port: int, log: Path):
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError("service did not start:\n" + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kill9_restart_finishes_every_run_exactly_once(ray_cluster, tmp_path, shared_data_dir, postgres_url):
    """kill -9 the service mid-training, lose one run's Ray job as well (as if its node went
    down with the service), restart: the surviving job is re-adopted, the lost one resumes
    from its checkpoint (not step 0), and every result is recorded exactly once."""
    from sqlalchemy import text

    token = _token(postgres_url)
    port = _free_port()
    env = {**os.environ, "SNRLAB_DATABASE_URL": postgres_url, "SNRLAB_DATA_DIR": str(shared_data_dir),
           "SNRLAB_RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "SNRLAB_DISPATCH_INTERVAL_S": "0.5"}
    svc = ServiceProcess(env, port, tmp_path / "service.log")
    spec = {**TINY, "name": "restart", "training": {**TINY["training"], "steps": 150},
            "evaluation": {**TINY["evaluation"], "analyses": False}}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        svc.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}{API}", headers=headers, timeout=30) as c:
            exp = c.post("/experiments", json=spec, headers={"Idempotency-Key": "restart-1"}).json()
            lost_run, kept_run = exp["run_ids"]
            _wait(c, f"/runs/{lost_run}", lambda b: b["current_step"] >= 75 and b["checkpoint_path"], timeout=300, interval=0.5)
        svc.kill9()
        ray_cluster.kill(ray_cluster.get_actor(f"snrlab-{lost_run}-a1", namespace=NAMESPACE), no_restart=True)
        time.sleep(2)
        svc.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}{API}", headers=headers, timeout=30) as c:
            again = c.post("/experiments", json=spec, headers={"Idempotency-Key": "restart-1"})
            assert again.json()["id"] == exp["id"]  # a client retrying its POST gets the same experiment
            final = _wait(c, f"/experiments/{exp['id']}", lambda b: b["status"] in ("succeeded", "failed"), timeout=900)
            assert final["status"] == "succeeded", final
            lost = c.get(f"/runs/{lost_run}").json()
            kept = c.get(f"/runs/{kept_run}").json()
            lb = c.get("/leaderboard", params={"metric": "fd_digits"}).json()
        assert lb["columns"] == ["constant", "debias"] and all(len(r["cells"]) == 2 for r in lb["rows"])
        assert lb["provenance"]["experiment_ids"] == [exp["id"]]
        assert [a["status"] for a in lost["attempts"]] == ["lost", "succeeded"]
        assert lost["attempts"][1]["start_step"] >= 50  # resumed from its last checkpoint, not step 0
        assert [a["status"] for a in kept["attempts"]] == ["succeeded"]  # re-adopted, not resubmitted
        engine = make_engine(postgres_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM experiments")).scalar() == 1
            assert conn.execute(text("SELECT COUNT(*) FROM results")).scalar() == 4  # 2 runs x 2 T, once each
            dup = conn.execute(text("SELECT COUNT(*) FROM (SELECT run_id, step FROM metric_points "
                                    "GROUP BY run_id, step HAVING COUNT(*) > 1) d")).scalar()
            assert dup == 0
            steps = conn.execute(text("SELECT step FROM metric_points WHERE run_id = :r ORDER BY step"), {"r": lost_run}).scalars().all()
            assert steps == [25, 50, 75, 100, 125, 150]
        engine.dispose()
    finally:
        svc.stop()
