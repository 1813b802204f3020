"""Several `snrlab serve` replicas on one PostgreSQL database and one real Ray cluster: exactly one
dispatches (the lease holder), the others serve the API and stand by. The leader is killed with
SIGKILL mid-training twice, then a third leader is frozen with SIGSTOP and woken after another
replica took over. Every takeover must come within 15 s, every run must finish exactly once
(detached run actors are re-adopted, not run again; a lost attempt resumes from its checkpoint),
every result must be recorded once, and the woken ex-leader must stand by without writing.

The Ray cluster (a head that schedules nothing, two 1-CPU worker nodes) runs in a process of its
own (tests/service/multinode_cluster.py --cluster-only); each replica is the real `snrlab serve`
in a session of its own, so each can be killed or frozen whole, by pid."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from serve_support import HELPER, ROOT, Helper, closed_port, serve, session_pids, wait_for
from sqlalchemy import text

from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade

pytestmark = pytest.mark.ray

API = "/api/v1"
TAKEOVER_TARGET_S = 15.0
SPEC = {
    "name": "replicas",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 600, "batch_size": 16, "seeds": [0], "checkpoint_every": 25},
    "evaluation": {"steps": [1], "samplers": ["ddpm"], "num_samples": 16, "metrics": ["fd_digits"], "analyses": False},
}


class Replica:
    def __init__(self, name: str, proc, log: Path, url: str):
        self.name, self.proc, self.log, self.url = name, proc, log, url

    def get(self, path: str) -> dict:
        return httpx.get(self.url + path, timeout=10).json()

    def role(self) -> str | None:
        try:
            return self.get("/readyz").get("dispatcher")
        except (httpx.HTTPError, ValueError):
            return None

    def signal(self, sig: int) -> None:
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGCONT)  # a frozen process cannot die of SIGKILL until it runs
        self.signal(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def until(what: str, check, timeout: float, *logs: Path, every: float = 0.2):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(every)


def test_leader_killed_twice_then_frozen_every_run_finishes_once(tmp_path, postgres_url):
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, token = tokens_store.create_token(s, name="replicas")
    ray_tmp = tempfile.mkdtemp(prefix="snrrp-", dir="/tmp")  # short: Ray's socket paths live under it
    ray_env = {"RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env = {**os.environ, **ray_env, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    cluster = Helper([str(HELPER), "--cluster-only"], env, tmp_path / "cluster.log")
    shared = tmp_path / "data"  # one machine: every replica and node sees the same runs directory
    replicas: list[Replica] = []

    def start(name: str, address: str) -> Replica:
        (tmp_path / name).mkdir()
        port = closed_port()
        proc, log = serve(tmp_path / name, port, address, SNRLAB_DATABASE_URL=postgres_url, SNRLAB_DATA_DIR=str(shared),
                          SNRLAB_DISPATCH_INTERVAL_S="0.5", **ray_env)
        replica = Replica(name, proc, log, f"http://127.0.0.1:{port}")
        replicas.append(replica)
        wait_for(proc, log, replica.url + "/readyz", lambda r: r.status_code == 200, timeout=300)
        return replica

    def takeover(successor: Replica, t0: float, *logs: Path) -> float:
        until(f"{successor.name} to lead", lambda: successor.role() == "leader", 60, successor.log, *logs)
        return time.time() - t0

    headers = {"Authorization": f"Bearer {token}"}
    try:
        address = cluster.expect("ready", timeout=300)["ray_address"]
        a = start("a", address)
        until("a to lead", lambda: a.role() == "leader", 30, a.log)
        b = start("b", address)
        assert b.role() == "standby"
        assert b.get("/healthz")["leader"] == a.get("/healthz")["replica"]
        with httpx.Client(base_url=b.url + API, headers=headers, timeout=30) as c:  # any replica takes work
            r = c.post("/experiments", json=SPEC)
            assert r.status_code == 201, r.text
            exp_id, runs = r.json()["id"], r.json()["run_ids"]

        def steps(replica: Replica) -> dict[str, int]:
            with httpx.Client(base_url=replica.url + API, headers=headers, timeout=30) as c:
                return {run["id"]: run["current_step"] for run in c.get(f"/experiments/{exp_id}").json()["runs"]}

        until("both runs to checkpoint", lambda: min(steps(b).values()) >= 50, 600, a.log, b.log, every=1)
        times = []

        # 1. SIGKILL the leader mid-training: b takes over
        t0 = time.time()
        a.kill()
        times.append(takeover(b, t0))
        c_ = start("c", address)
        before = steps(c_)
        until("training to go on under b", lambda: min(steps(c_)[r] - before[r] for r in runs) >= 25, 300, b.log, every=1)

        # 2. SIGKILL the new leader: c takes over
        t0 = time.time()
        b.kill()
        times.append(takeover(c_, t0))
        d = start("d", address)

        # 3. freeze the leader: d takes over; c wakes up and must stand by without writing
        frozen_at = steps(d)
        t0 = time.time()
        c_.signal(signal.SIGSTOP)
        times.append(takeover(d, t0, c_.log))
        until("training to go on under d", lambda: all(steps(d)[r] - frozen_at[r] >= 25 or steps(d)[r] == SPEC["training"]["steps"]
                                                       for r in runs), 300, d.log, every=1)
        c_.signal(signal.SIGCONT)
        until("the woken ex-leader to stand by", lambda: c_.role() == "standby", 30, c_.log)
        woken = c_.get("/healthz")
        assert woken["leader"] == d.get("/healthz")["replica"] != woken["replica"]
        print(f"takeovers: {', '.join(f'{t:.1f} s' for t in times)}; the woken ex-leader had {woken['fenced_writes']} "
              "write(s) refused by the fence")
        assert max(times) <= TAKEOVER_TARGET_S, times

        with httpx.Client(base_url=d.url + API, headers=headers, timeout=30) as c:
            final = until("the experiment to finish", lambda: (e := c.get(f"/experiments/{exp_id}").json())["status"]
                          in ("succeeded", "failed", "cancelled") and e, 900, d.log, every=1)
            assert final["status"] == "succeeded", final
            attempts = {run: c.get(f"/runs/{run}").json()["attempts"] for run in runs}
            status = c.get("/status").json()
        for run, tries in attempts.items():
            print(run, [(t["status"], t["start_step"]) for t in tries])
            assert tries[-1]["status"] == "succeeded" and all(t["status"] == "lost" for t in tries[:-1]), tries
            assert all(t["start_step"] > 0 for t in tries[1:]), "a later attempt resumes from a checkpoint"
        assert status["lease"]["holder"] == status["this_replica"] and status["lease"]["token"] == 4  # a, b, c, d: no flapping
        assert {r["id"] for r in status["replicas"] if r["leader"]} == {status["this_replica"]}

        with engine.connect() as conn:
            q = lambda sql, **kw: conn.execute(text(sql), kw).scalars().all()  # noqa: E731
            assert sorted(q("SELECT run_id FROM results")) == sorted(runs)  # 1 T x 1 metric, once per run
            assert q("SELECT COUNT(*) FROM attempts WHERE status NOT IN ('succeeded', 'lost')") == [0]
            assert q("SELECT COUNT(*) FROM (SELECT run_id, step FROM metric_points GROUP BY run_id, step "
                     "HAVING COUNT(*) > 1) d") == [0]
            for run in runs:
                assert q("SELECT step FROM metric_points WHERE run_id = :r ORDER BY step", r=run) == \
                    list(range(25, SPEC["training"]["steps"] + 1, 25))

            # what a standby replica costs the database while nothing runs: commits/s with and without c
            def commits_per_s(window: float = 8.0) -> float:
                count = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                first = conn.execute(text(count)).scalar_one()
                conn.commit()
                time.sleep(window)
                conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                return (conn.execute(text(count)).scalar_one() - first) / window

            two = commits_per_s()
            c_.kill()
            time.sleep(1)
            one = commits_per_s()
        print(f"idle database load: {two:.1f} commits/s with a leader and a standby, {one:.1f} with the leader alone: "
              f"a standby costs {two - one:.1f} commits/s")
    finally:
        for replica in replicas:
            replica.kill()
        cluster.close()
        engine.dispose()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not session_pids(cluster.proc.pid), "processes of the cluster helper are still alive"
