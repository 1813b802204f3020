"""`snrlab` service commands: token (local DB) and the API client commands against a live server."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from typer.testing import CliRunner

from service.app.main import create_app
from service.client.cli import app
from service.core.config import get_settings
from service.domain.cluster import ClusterInfo, NodeInfo
from service.runtime.executor import JobState, SweepState
from service.core.errors import AuthError
from service.core.lifecycle import utcnow
from service.client import commands
from service.client.admin import parse_expiry
from service.store import tokens as tokens_store
from service.store import users as users_store
from service.store.db import make_sessionmaker, session_scope

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch, settings):
    monkeypatch.setenv("SNRLAB_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("SNRLAB_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_token_create_prints_once_and_stores_hash(cli_env, session_factory):
    result = runner.invoke(app, ["token", "create", "--name", "laptop"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("snr_")
    with session_factory() as s:
        (row,) = tokens_store.list_tokens(s)
        assert row.name == "laptop" and row.token_hash == tokens_store.hash_token(token)
        assert tokens_store.verify_token(s, token=token).id == row.id
    listed = runner.invoke(app, ["token", "list"])
    assert "laptop" in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["token", "revoke", row.id]).exit_code == 0


def test_token_create_with_user_scopes_and_expiry(cli_env, session_factory):
    made = runner.invoke(app, ["token", "create", "--name", "ci", "--user", "alice", "--scope", "read", "--scope", "submit",
                               "--expires", "30d"])
    assert made.exit_code == 0, made.output
    assert "of user alice, scopes: read submit, expires" in made.stderr
    token = made.stdout.strip().splitlines()[-1]
    admin = runner.invoke(app, ["token", "create", "--name", "root", "--scope", "admin", "--expires", "never"])
    assert admin.exit_code == 0, admin.output
    with session_factory() as s:
        got = tokens_store.verify_token(s, token=token)
        assert (got.name, got.user, got.scopes) == ("ci", "alice", "read submit")
        days = (got.expires_at - utcnow()).total_seconds() / 86400
        assert 29.9 < days <= 30
        rows = {r.name: r for r in tokens_store.list_tokens(s)}
        assert (rows["root"].user, rows["root"].scopes, rows["root"].expires_at) == ("root", "admin", None)
        assert [u.name for u in users_store.list_users(s)] == ["alice", "root"]

    listed = runner.invoke(app, ["token", "list"], env={"COLUMNS": "200"})
    line = next(ln for ln in listed.stdout.splitlines() if got.id in ln)
    assert "alice" in line and "read submit" in line and f"{got.expires_at:%Y-%m-%d}" in line
    assert "never" in next(ln for ln in listed.stdout.splitlines() if rows["root"].id in ln)
    assert runner.invoke(app, ["token", "revoke", got.id]).exit_code == 0
    listed = runner.invoke(app, ["token", "list"], env={"COLUMNS": "200"})
    assert f"{utcnow():%Y-%m-%d}" in next(ln for ln in listed.stdout.splitlines() if got.id in ln)  # revoked today
    with session_factory() as s, pytest.raises(AuthError, match="invalid or revoked"):
        tokens_store.verify_token(s, token=token)


@pytest.mark.parametrize("args, message", [
    (["--scope", "write"], "unknown scope(s) 'write'; valid: read, submit, admin"),
    (["--expires", "soon"], "use a positive count and a unit"),
    (["--expires", "0d"], "use a positive count and a unit"),
])
def test_token_create_refuses_bad_scopes_and_expiries(cli_env, session_factory, args, message):
    result = runner.invoke(app, ["token", "create", "--name", "x", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    with session_factory() as s:
        assert tokens_store.list_tokens(s) == []


def test_expiry_durations():
    now = utcnow()
    assert parse_expiry("90m", now=now) == now + timedelta(minutes=90)
    assert parse_expiry("12h", now=now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now=now) == now + timedelta(days=14)
    assert parse_expiry("never", now=now) is None


def test_user_quota_and_list(cli_env, session_factory):
    assert runner.invoke(app, ["token", "create", "--name", "laptop", "--user", "alice"]).exit_code == 0
    set_ = runner.invoke(app, ["user", "quota", "alice", "--max-runs", "2", "--max-gpus", "1.5"])
    assert set_.exit_code == 0, set_.output
    assert "user alice: max runs 2, max cpus -, max gpus 1.5" in set_.stdout
    # limits not given stay; `none` lifts one; a user without a token yet gets one set too
    assert runner.invoke(app, ["user", "quota", "alice", "--max-cpus", "8", "--max-gpus", "none"]).exit_code == 0
    assert runner.invoke(app, ["user", "quota", "bob", "--max-runs", "0"]).exit_code == 0
    with session_factory() as s:
        alice, bob = users_store.get_user(s, name="alice"), users_store.get_user(s, name="bob")
        assert (alice.max_runs, alice.max_cpus, alice.max_gpus) == (2, 8.0, None)
        assert (bob.max_runs, bob.max_cpus, bob.max_gpus) == (0, None, None)
    listed = runner.invoke(app, ["user", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in listed.stdout.splitlines() if "│" in ln]
    rows = {c[0]: c[1:5] for c in cells if c and c[0] in ("alice", "bob")}
    assert rows == {"alice": ["1", "2", "8", "-"], "bob": ["0", "0", "-", "-"]}

    bad = runner.invoke(app, ["user", "quota", "alice", "--max-runs", "-1"])
    assert bad.exit_code == 2 and "max_runs must be >= 0" in bad.output
    assert runner.invoke(app, ["user", "quota", "alice", "--max-cpus", "lots"]).exit_code == 2


def test_db_upgrade(cli_env):
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0 and "head" in result.stdout


class InstantExecutor:
    """Every job succeeds on its first poll (for --wait)."""

    def __init__(self):
        self.evaluations = {}

    def start(self): ...
    def cluster(self): return ClusterInfo((NodeInfo(cpus=4, memory_bytes=8 * 2**30),))
    def submit(self, job): self.evaluations[job.name] = job.run.evaluation
    def cancel(self, name): ...
    def release(self, name): ...
    def list_jobs(self): return []
    def maintain(self): ...
    def submit_sweep(self, job): ...
    def sync_sweep(self, name, news): return SweepState(phase="running")
    def release_sweep(self, name): ...
    def list_sweeps(self): return []
    def shutdown(self): ...

    def poll(self, name):
        steps = self.evaluations[name].steps
        return JobState(phase="succeeded", results=[
            {"num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": float(t), "num_gen": 64, "extractor": "fd_digits"}
            for t in steps])


def test_client_commands_against_a_live_server(settings, engine, token, make_spec, tmp_path, monkeypatch, live_server):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(make_spec()))
    live = settings.model_copy(update={"dispatcher_enabled": True})
    with live_server(create_app(live, executor=InstantExecutor())) as server:
        monkeypatch.setenv("SNRLAB_URL", server.url)
        monkeypatch.setenv("COLUMNS", "250")
        monkeypatch.delenv("SNRLAB_TOKEN", raising=False)
        denied = runner.invoke(app, ["submit", str(spec_file)])
        assert denied.exit_code == 1 and "HTTP 401" in denied.output and "SNRLAB_TOKEN" in denied.output
        assert "Traceback" not in denied.output

        monkeypatch.setenv("SNRLAB_TOKEN", token)
        waited = runner.invoke(app, ["submit", str(spec_file), "--wait", "--poll", "0.2"])
        assert waited.exit_code == 0, waited.output
        exp_id = waited.stdout.strip().splitlines()[-1]
        assert exp_id.startswith("exp_") and "succeeded" in waited.output

        listed = runner.invoke(app, ["list"])
        assert exp_id in listed.stdout and "succeeded" in listed.stdout
        shown = runner.invoke(app, ["show", exp_id])
        assert "constant" in shown.stdout and "debias" in shown.stdout
        run_id = next(w for w in shown.stdout.split() if w.startswith("run_"))
        run = runner.invoke(app, ["show", run_id])
        assert run.exit_code == 0 and "fd_digits ddpm T=5" in run.stdout

        board = runner.invoke(app, ["leaderboard", "--dataset", "digits", "--metric", "fd_digits"])
        assert board.exit_code == 0 and "constant" in board.stdout and "debias" in board.stdout
        assert "5.000 ± –" in board.stdout and exp_id in board.stdout and "1 seed)" in board.stdout

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(make_spec(weightings=[{"name": "nope"}])))
        rejected = runner.invoke(app, ["submit", str(bad)])
        assert rejected.exit_code == 1 and "weightings.0.name" in rejected.output and "unknown weighting" in rejected.output

        second = runner.invoke(app, ["submit", str(spec_file), "--priority", "3"])
        new_id = second.stdout.strip().splitlines()[-1]
        assert "owner tests, priority 3" in runner.invoke(app, ["show", new_id]).stdout
        moved = runner.invoke(app, ["priority", new_id, "-5"])
        assert moved.exit_code == 0 and f"experiment {new_id}: priority -5" in moved.stdout, moved.output
        assert runner.invoke(app, ["priority", new_id, "101"]).exit_code == 1

        with session_scope(make_sessionmaker(engine)) as s:
            _, reader = tokens_store.create_token(s, name="dashboard", scopes=["read"])
        monkeypatch.setenv("SNRLAB_TOKEN", reader)
        refused = runner.invoke(app, ["cancel", new_id])
        assert refused.exit_code == 1 and "HTTP 403" in refused.output and "lacks the 'submit' scope" in refused.output
        monkeypatch.setenv("SNRLAB_TOKEN", token)
        cancelled = runner.invoke(app, ["cancel", new_id])
        assert cancelled.exit_code == 0
        assert runner.invoke(app, ["show", "exp_missing"]).exit_code == 1

        status = runner.invoke(app, ["status"])  # one replica: it leads
        assert status.exit_code == 0, status.output
        assert "leader" in status.stdout and "(answered)" in status.stdout and "lease: held by" in status.stdout
        queued = runner.invoke(app, ["queue"])
        assert queued.exit_code == 0 and "queue: 0 runs queued" in queued.stdout and "per user" in queued.stdout


@pytest.mark.parametrize("value, text", [(486.698, "486.7"), (1264.952, "1265"), (5.0, "5.000"), (0.024, "0.02400"),
                                         (-3.14159, "-3.142"), (0.0, "0")])
def test_leaderboard_numbers_keep_four_significant_digits(value, text):
    from service.domain.format import num as _num

    assert _num(value) == text


def test_sweep_passes_its_priority(tmp_path, monkeypatch):
    """`snrlab sweep FILE --priority N` sends ?priority=N (the sweep itself runs in test_sweeps)."""
    sent = []

    def fake_call(method, path, **kwargs):
        sent.append((method, path, kwargs.get("params")))
        return {"id": "swp_1", "name": "s", "experiment_id": "exp_1", "metric": "fd_digits", "mode": "min", "message": None,
                "spec": {"search": "grid", "scheduler": "fifo", "num_steps": 5}}

    monkeypatch.setattr(commands, "call", fake_call)
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"base": {}, "search_space": {}}))
    assert runner.invoke(app, ["sweep", str(spec), "--priority", "-7"]).exit_code == 0
    assert runner.invoke(app, ["sweep", str(spec)]).exit_code == 0
    assert sent == [("POST", "/sweeps", {"priority": -7}), ("POST", "/sweeps", {})]


def test_serve_refuses_a_second_replica_on_sqlite(tmp_path, monkeypatch):
    """SQLite is one process: with another live service's lease on the file, `snrlab serve` stops
    at once with the reason (before uvicorn or Ray start), exit code 2, no traceback."""
    from service.runtime.lease import Lease
    from service.store.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'one.db'}"
    monkeypatch.setenv("SNRLAB_DATABASE_URL", url)
    monkeypatch.setenv("SNRLAB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    try:
        assert Lease(make_sessionmaker(engine), replica="otherhost:4242:abc").acquire()
        result = runner.invoke(app, ["serve", "--port", "1"])
    finally:
        engine.dispose()
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "otherhost:4242:abc" in result.output and "per SQLite file" in result.output
    assert "Traceback" not in result.output
