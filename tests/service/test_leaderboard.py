"""The leaderboard that decides (service.domain.leaderboard) on both databases: verdicts against a
baseline (paired within an experiment, Welch across, Holm per table), table summaries, the floor,
the terminal's verdicts, and the cache: whatever happens to the results, the cached answer is
the one computed afresh from them."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from service.core.lifecycle import RunStatus, transition
from service.domain import experiments as domain_experiments
from service.domain.leaderboard import leaderboard
from service.domain.spec import ExperimentSpec
from service.store import runs as runs_store
from service.store.db import session_scope
from service.store.models import Experiment, Run

API = "/api/v1"


def _spec(make_spec, name="lb", weightings=("constant", "debias"), seeds=(0, 1, 2, 3), steps=(5, 20)):
    return make_spec(name=name, weightings=[{"name": w} for w in weightings],
                     training={"steps": 100, "batch_size": 16, "seeds": list(seeds)},
                     evaluation={"steps": list(steps), "num_samples": 64, "metrics": ["fd_digits"]})


def _finish(session_factory, spec: dict, value, *, floor=None) -> str:
    """Create the experiment and finish every run with value(weighting, seed, T)."""
    with session_scope(session_factory) as s:
        exp, _ = domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="test")
        for run in exp.runs:
            transition(run, RunStatus.TRAINING)
            rows = [{"num_steps": t, "sampler": "ddpm", "metric": "fd_digits", "value": value(run.weighting, run.seed, t),
                     "num_gen": 64, "extractor": "fd_digits", **({"floor": floor} if floor is not None else {})}
                    for t in spec["evaluation"]["steps"]]
            runs_store.record_results(s, run_id=run.id, results=rows)
            transition(run, RunStatus.SUCCEEDED)
        return exp.id


NOISE = {0: 0.0, 1: 1.5, 2: -0.7, 3: 2.2}  # per-seed noise shared by both weightings (common random numbers)


def test_a_paired_difference_is_a_verdict_with_its_interval(client, auth, session_factory, make_spec):
    # debias is 20% lower (better) than constant on every seed, around a seed effect both share
    _finish(session_factory, _spec(make_spec), lambda w, s, t: (100 + 10 * NOISE[s]) * (0.8 if w == "debias" else 1.0) + t)
    lb = client.get(f"{API}/leaderboard", params={"metric": "fd_digits"}, headers=auth).json()
    [table] = lb["tables"]
    assert table["baseline"] == "constant" and "Holm-corrected over 2 comparisons" in table["caption"]
    assert "paired t on log ratios" in table["caption"]
    for row in lb["rows"]:
        assert row["cells"]["constant"]["vs_baseline"] is None  # the baseline is not compared with itself
        v = row["cells"]["debias"]["vs_baseline"]
        assert v["verdict"] == "better" and v["method"] == "paired t on log ratios" and v["n"] == 4
        assert v["change_pct"] < -10 and v["ci_pct"][0] < v["change_pct"] < v["ci_pct"][1] < 0
        assert v["p_adjusted"] >= v["p"]
    assert table["mean_ranks"] == {"constant": 2.0, "debias": 1.0}
    assert table["verdict_counts"] == {"debias": {"better": 2, "worse": 0, "tie": 0, "underpowered": 0}}
    # the same cells as the baseline: the other way round
    lb = client.get(f"{API}/leaderboard", params={"metric": "fd_digits", "baseline": "debias"}, headers=auth).json()
    assert {r["cells"]["constant"]["vs_baseline"]["verdict"] for r in lb["rows"]} == {"worse"}


def test_ties_underpowered_cells_and_the_margin(client, auth, session_factory, make_spec):
    # p2 within half a percent of constant, either way: a tie at the default 5% margin, not at 0.5%
    # (a small difference that is significant would be better or worse: significance comes first)
    spec = _spec(make_spec, weightings=("constant", "p2"), seeds=(0, 1, 2, 3))
    wobble = {0: 1.005, 1: 0.996, 2: 1.003, 3: 0.998}
    _finish(session_factory, spec, lambda w, s, t: (100 + 10 * NOISE[s]) * (wobble[s] if w.startswith("p2") else 1.0))
    lb = client.get(f"{API}/leaderboard", params={"metric": "fd_digits", "baseline": "constant"}, headers=auth).json()
    assert {r["cells"]["p2(gamma=1,k=1)"]["vs_baseline"]["verdict"] for r in lb["rows"]} == {"tie"}
    narrow = client.get(f"{API}/leaderboard", params={"metric": "fd_digits", "margin": 0.005}, headers=auth).json()
    assert {r["cells"]["p2(gamma=1,k=1)"]["vs_baseline"]["verdict"] for r in narrow["rows"]} != {"tie"}
    # one seed: never a verdict
    _finish(session_factory, _spec(make_spec, name="one", seeds=(7,), steps=(50,)), lambda w, s, t: 10.0 if w == "debias" else 20.0)
    lb = client.get(f"{API}/leaderboard", params={"metric": "fd_digits"}, headers=auth).json()
    [row] = [r for r in lb["rows"] if r["num_steps"] == 50]
    assert row["cells"]["debias"]["vs_baseline"]["verdict"] == "underpowered"
    assert row["cells"]["debias"]["vs_baseline"]["method"] == "none (n < 2)"


def test_cells_of_two_experiments_are_compared_unpaired(client, auth, session_factory, make_spec):
    """The same setup submitted twice (the same seeds): seeds are common random numbers only within
    one experiment's runs... here each weighting is its own experiment, so the test is Welch's."""
    _finish(session_factory, _spec(make_spec, name="a", weightings=("constant",)), lambda w, s, t: 100 + 10 * NOISE[s])
    _finish(session_factory, _spec(make_spec, name="b", weightings=("debias",)), lambda w, s, t: 50 + 10 * NOISE[s])
    lb = client.get(f"{API}/leaderboard", params={"metric": "fd_digits"}, headers=auth).json()
    v = lb["rows"][0]["cells"]["debias"]["vs_baseline"]
    assert v["method"] == "Welch (unpaired)" and v["n"] == 8 and v["verdict"] == "better"
    assert "Welch (unpaired)" in lb["tables"][0]["caption"]


def test_a_weighting_name_finds_its_labelled_baseline_and_rows_carry_the_floor(client, auth, session_factory, make_spec):
    spec = make_spec(weightings=[{"name": "min_snr", "gamma": 5}, {"name": "debias"}],
                     training={"steps": 100, "batch_size": 16, "seeds": [0, 1]},
                     evaluation={"steps": [5], "num_samples": 64, "metrics": ["fd_digits"]})
    _finish(session_factory, spec, lambda w, s, t: 30.0 + s if w == "debias" else 60.0 + 2 * s, floor=12.5)
    lb = client.get(f"{API}/leaderboard", params={"baseline": "min_snr"}, headers=auth).json()
    assert lb["tables"][0]["baseline"] == "min_snr(gamma=5)" and lb["weightings"]["min_snr(gamma=5)"] == "min_snr"
    assert lb["rows"][0]["floor"] == 12.5
    assert lb["rows"][0]["cells"]["debias"]["vs_baseline"]["verdict"] in ("better", "underpowered")
    lb = client.get(f"{API}/leaderboard", params={"baseline": "nobody"}, headers=auth).json()
    assert lb["tables"][0]["baseline"] is None and "no baseline column" in lb["tables"][0]["caption"]
    assert all(c["vs_baseline"] is None for r in lb["rows"] for c in r["cells"].values())


def test_an_unchanged_leaderboard_is_served_from_the_cache_with_a_304(client, auth, session_factory, make_spec):
    _finish(session_factory, _spec(make_spec, seeds=(0, 1)), lambda w, s, t: 10.0 + s + t)
    first = client.get(f"{API}/leaderboard", headers=auth)
    etag = first.headers["etag"]
    assert client.get(f"{API}/leaderboard", headers={**auth, "If-None-Match": etag}).status_code == 304
    assert client.get("/leaderboard", headers=auth).headers["etag"] != etag  # the page has its own entry
    _finish(session_factory, _spec(make_spec, name="more", seeds=(5,)), lambda w, s, t: 1.0)  # a change moves the version
    again = client.get(f"{API}/leaderboard", headers={**auth, "If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag and len(again.json()["provenance"]["experiment_ids"]) == 2


# ---------------------------------------------------------------- the fast path equals recomputation
OPS = st.lists(st.sampled_from(["create", "succeed", "succeed", "rerecord", "cancel", "fail", "delete"]), min_size=3, max_size=9)


@hsettings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS, seed=st.integers(0, 10_000))
def test_the_cached_answer_is_always_the_recomputed_one(client, auth, session_factory, make_spec, ops, seed):
    """Random orders of inserts, re-runs (results recorded again), cancellations, failures and
    deletions: after each, the API (cached under the results version) says exactly what the
    leaderboard computed afresh from the rows says, for two queries."""
    import random

    rnd = random.Random(seed)
    queries = [{}, {"metric": "fd_digits", "baseline": "debias"}]
    for i, op in enumerate(ops):
        with session_scope(session_factory) as s:
            live = s.scalars(select(Run).where(Run.status == RunStatus.QUEUED.value).order_by(Run.id)).all()
            done = s.scalars(select(Run).where(Run.status == RunStatus.SUCCEEDED.value).order_by(Run.id)).all()
            if op == "create" or not (live or done):
                spec = _spec(make_spec, name=f"p{i}", seeds=(0, 1), steps=(5,))
                domain_experiments.create_experiment(s, spec=ExperimentSpec.model_validate(spec), code_version="t")
            elif op in ("succeed", "fail", "cancel") and live:
                run = rnd.choice(live)
                if op == "cancel":
                    transition(run, RunStatus.CANCELLED)
                else:
                    transition(run, RunStatus.TRAINING)
                    runs_store.record_results(s, run_id=run.id, results=[
                        {"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": rnd.uniform(1, 100)}])
                    transition(run, RunStatus.SUCCEEDED if op == "succeed" else RunStatus.FAILED)
            elif op == "rerecord" and done:
                run = rnd.choice(done)
                runs_store.record_results(s, run_id=run.id, results=[
                    {"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 5.0},
                    {"num_steps": 20, "sampler": "ddpm", "metric": "fd_digits", "value": rnd.uniform(1, 100)}])
            elif op == "delete":
                exp_id = s.scalars(select(Experiment.id).order_by(Experiment.id)).first()
                if exp_id is not None:  # the database cascades to runs and results
                    s.execute(delete(Experiment).where(Experiment.id == exp_id))
        for q in queries:
            cached = client.get(f"{API}/leaderboard", params=q, headers=auth).json()
            with session_factory() as s:
                fresh = leaderboard(s, metric=q.get("metric"), baseline=q.get("baseline", "constant")).model_dump(mode="json")
            assert _same(cached, fresh), (op, q)


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize("metric", ["fd_digits"])
def test_the_terminal_shows_each_cells_verdict(settings, engine, session_factory, make_spec, token, live_server, metric,
                                               monkeypatch):
    from typer.testing import CliRunner

    from service.app.main import create_app
    from service.client.cli import app

    _finish(session_factory, _spec(make_spec), lambda w, s, t: (100 + 10 * NOISE[s]) * (0.8 if w == "debias" else 1.0) + t)
    with live_server(create_app(settings)) as server:
        monkeypatch.setenv("SNRLAB_URL", server.url)
        monkeypatch.setenv("SNRLAB_TOKEN", token)
        monkeypatch.setenv("COLUMNS", "120")
        out = CliRunner().invoke(app, ["leaderboard", "--metric", metric, "--baseline", "constant"])
    assert out.exit_code == 0, out.output
    assert "constant (baseline)" in out.output and "▲ better" in out.output and "rank" in out.output
    assert "Holm-corrected over 2 comparisons" in out.output
