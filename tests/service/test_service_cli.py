"""`snrlab` service commands: token (local DB) and the API client commands against a live server."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from service.app.main import create_app
from service.client.cli import app
from service.core.config import get_settings
from service.domain.cluster import ClusterInfo, NodeInfo
from service.runtime.executor import JobState, SweepState
from service.store import tokens as tokens_store

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

        second = runner.invoke(app, ["submit", str(spec_file)])
        new_id = second.stdout.strip().splitlines()[-1]
        cancelled = runner.invoke(app, ["cancel", new_id])
        assert cancelled.exit_code == 0
        assert runner.invoke(app, ["show", "exp_missing"]).exit_code == 1


@pytest.mark.parametrize("value, text", [(486.698, "486.7"), (1264.952, "1265"), (5.0, "5.000"), (0.024, "0.02400"),
                                         (-3.14159, "-3.142"), (0.0, "0")])
def test_leaderboard_numbers_keep_four_significant_digits(value, text):
    from service.domain.format import num as _num

    assert _num(value) == text
