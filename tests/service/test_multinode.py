"""Several Ray nodes for real, on one machine: a head that schedules nothing and two 1-CPU worker
nodes (`ray.cluster_utils.Cluster`), the service joined to the head through SNRLAB_RAY_ADDRESS.
Two runs train, one per worker node; one node is killed mid-training. Its run's attempt is
`lost` (not a failed attempt), the run resumes from its last checkpoint on the surviving node
once that node is free, the experiment completes and every result is recorded once.

The cluster and the service live in tests/service/multinode_cluster.py, a process of their own
(this test session already holds a Ray session); every process it starts is ended afterwards,
also when the test fails."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from serve_support import HELPER, Helper, session_pids

from service.store import tokens as tokens_store
from service.store.db import make_engine, make_sessionmaker, session_scope, upgrade
from trainer.metrics_log import read_records

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"

SPEC = {
    "name": "two-nodes",
    "datasets": [{"name": "digits"}],
    "weightings": [{"name": "constant"}, {"name": "debias"}],
    "model": {"preset": "tiny"},
    "training": {"steps": 400, "batch_size": 16, "seeds": [0], "checkpoint_every": 20},
    "evaluation": {"steps": [1], "samplers": ["ddpm"], "num_samples": 16, "metrics": ["fd_digits"], "analyses": False},
}


def _token(database_url: str) -> str:
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(make_sessionmaker(engine)) as s:
        _, tok = tokens_store.create_token(s, name="multinode")
    engine.dispose()
    return tok


def _starts(runs_dir: Path, run_id: str) -> list[dict]:
    """The attempt-start events the trainer logged for a run (each names its Ray node)."""
    records, _ = read_records(runs_dir / run_id / "metrics.jsonl")
    return [r for r in records if r.get("event") == "start"]


def _wait(client: httpx.Client, path: str, done, timeout: float, what: str, helper: Helper) -> dict:
    deadline = time.time() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {body}\n{helper.tail()}")
        time.sleep(1)


def test_a_dead_node_costs_its_run_an_attempt_but_no_failure_and_the_run_resumes(tmp_path, postgres_url):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "data" / "runs"
    token = _token(postgres_url)
    ray_tmp = tempfile.mkdtemp(prefix="snrmn-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}  # loopback only, as trainer.raysession
    env.pop("RAY_ADDRESS", None)
    helper = Helper([str(HELPER), "--database-url", postgres_url, "--data-dir", str(data_dir)], env, tmp_path / "helper.log")
    try:
        ready = helper.expect("ready", timeout=300)
        workers = ready["workers"]
        assert len(workers) == 2
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=ready["url"] + API, headers=headers, timeout=30) as c:
            r = c.post("/experiments", json=SPEC)
            assert r.status_code == 201, r.text
            exp = r.json()
            # both runs train at once, one on each 1-CPU worker node; wait for two checkpoints of each
            for run_id in exp["run_ids"]:
                _wait(c, f"/runs/{run_id}", lambda b: b["current_step"] >= 40 and b["checkpoint_path"], 600,
                      "the runs to checkpoint", helper)
            train_node = {r: _starts(runs_dir, r)[-1]["node"] for r in exp["run_ids"]}
            assert set(train_node.values()) == set(workers), "the runs should train on different worker nodes"
            # A run's own actor (0 CPUs) may sit on any node, so a node's death can take a run's Train
            # worker (the trainer's failure must read as a lost node) or its actor (the executor's
            # poll must), or both. Prefer killing a Train worker whose run actor lives elsewhere,
            # and no other run's actor with it.
            helper.send(cmd="actors")
            actor_node = {name.split("-")[1]: node for name, node in helper.expect("actors", timeout=60)["nodes"].items()}
            runs = exp["run_ids"]

            def hits(victim_run: str) -> set[str]:  # the runs that lose an attempt when its Train node dies
                return {r for r in runs if train_node[victim_run] in (train_node[r], actor_node.get(r))}

            victim = min(runs, key=lambda r: (actor_node.get(r) == train_node[r], len(hits(r))))
            other = next(r for r in runs if r != victim)
            victim_node, other_node = train_node[victim], train_node[other]
            expect_lost = hits(victim)
            print(f"killing node {victim_node[:8]}: Train worker of {victim}"
                  f"{' and its run actor' if actor_node.get(victim) == victim_node else ''}; runs losing an attempt: "
                  f"{sorted(expect_lost)}")

            helper.send(cmd="remove_node", node_id=victim_node)
            helper.expect("removed", timeout=120)
            assert c.get(f"/runs/{victim}").json()["current_step"] < SPEC["training"]["steps"], "killed too late"

            final = _wait(c, f"/experiments/{exp['id']}", lambda b: b["status"] in ("succeeded", "failed", "cancelled"),
                          900, "the experiment to finish", helper)
            assert final["status"] == "succeeded", final
            attempts = {r: c.get(f"/runs/{r}").json()["attempts"] for r in runs}
            readyz = httpx.get(ready["url"] + "/readyz", timeout=30).json()

        assert readyz["ray"] == f"connected to {ready['ray_address']}"
        for r in runs:
            print(f"{r}: {[(a['status'], a['start_step'], a['error']) for a in attempts[r]]}")
            if r in expect_lost:  # lost, not failed: no attempt spent; resumed from its last checkpoint
                assert [a["status"] for a in attempts[r]] == ["lost", "succeeded"] and attempts[r][0]["error"]
                assert attempts[r][1]["start_step"] >= 40
                starts = _starts(runs_dir, r)
                assert starts[-1]["step"] == attempts[r][1]["start_step"]
                assert starts[-1]["node"] == other_node  # the resumed attempt ran on the surviving node
            else:
                assert [a["status"] for a in attempts[r]] == ["succeeded"]
        assert victim in expect_lost
        for run_id in (victim, other):
            usage = json.loads((runs_dir / run_id / "train_done.json").read_text())["usage"]
            assert usage["device"] == "cpu" and usage["num_workers"] == 1 and usage["wall_s"] > 0

        engine = make_engine(postgres_url)
        try:
            with engine.connect() as conn:
                q = lambda sql, **kw: conn.execute(text(sql), kw).scalars().all()  # noqa: E731
                assert q("SELECT COUNT(*) FROM experiments") == [1]
                assert sorted(q("SELECT run_id FROM results")) == sorted([victim, other])  # 1 T x 1 metric, once per run
                assert q("SELECT COUNT(*) FROM attempts WHERE status = 'failed'") == [0]
                assert q("SELECT COUNT(*) FROM (SELECT run_id, step FROM metric_points GROUP BY run_id, step "
                         "HAVING COUNT(*) > 1) d") == [0]
                assert q("SELECT step FROM metric_points WHERE run_id = :r ORDER BY step", r=victim) == \
                    list(range(25, SPEC["training"]["steps"] + 1, 25))
        finally:
            engine.dispose()
    finally:
        helper.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not session_pids(helper.proc.pid), "processes of the cluster helper are still alive"
