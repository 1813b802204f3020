"""Lifecycle and dispatch with a fake executor (fast, deterministic: we call tick() by hand)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from service.core.errors import InvalidTransitionError
from service.core.lifecycle import (
    TABLES,
    TERMINAL,
    ExperimentStatus,
    RunStatus,
    check_transition,
    experiment_status,
    transition,
)
from service.domain import experiments as domain_experiments
from service.domain import leaderboard as domain_leaderboard
from service.domain.spec import ExperimentSpec
from service.runtime.dispatcher import Dispatcher
from service.store import experiments as experiments_store
from service.store import runs as runs_store
from service.store.db import session_scope
from service.store.models import Attempt, MetricPoint, Result, Run

# ---------------------------------------------------------------- lifecycle (no database)
CASES = [(machine, src, dst) for machine in TABLES for src in machine for dst in machine]


@pytest.mark.parametrize("machine,src,dst", CASES, ids=[f"{m.__name__}-{a.value}-{b.value}" for m, a, b in CASES])
def test_transition_tables_are_enforced(machine, src, dst):
    row = SimpleNamespace(status=src.value, started_at=None, finished_at=None, cancel_requested=True)
    if dst in TABLES[machine][src]:
        transition(row, dst, error="why")
        assert row.status == dst.value and row.error == "why"
        assert (row.finished_at is not None) == dst.is_terminal()
        assert (row.started_at is not None) == (dst is RunStatus.TRAINING)
    else:
        with pytest.raises(InvalidTransitionError, match=f"from {src.value} to {dst.value}"):
            check_transition(src, dst)
        assert row.status == src.value


def test_terminal_states_are_final_and_named_once():
    for machine, table in TABLES.items():
        for s in machine:
            assert s.is_terminal() == (table[s] == frozenset()) == (s.value in TERMINAL), (machine, s)


@pytest.mark.parametrize("states,expected", [
    ([], ExperimentStatus.QUEUED),
    (["queued", "queued"], ExperimentStatus.QUEUED),
    (["queued", "training"], ExperimentStatus.RUNNING),
    (["succeeded", "queued"], ExperimentStatus.RUNNING),
    (["succeeded", "succeeded"], ExperimentStatus.SUCCEEDED),
    (["succeeded", "cancelled"], ExperimentStatus.CANCELLED),
    (["failed", "cancelled", "succeeded"], ExperimentStatus.FAILED),
])
def test_experiment_status_derives_from_runs(states, expected):
    assert experiment_status(states) is expected


# ---------------------------------------------------------------- dispatcher
@pytest.fixture
def submit(session_factory, make_spec):
    def go(**overrides) -> list[str]:
        spec = ExperimentSpec.model_validate(make_spec(**overrides))
        with session_scope(session_factory) as s:
            exp, _ = domain_experiments.create_experiment(s, spec=spec, code_version="test")
            return [r.id for r in exp.runs]

    return go


@pytest.fixture
def dispatcher(session_factory, settings, fake_executor):
    def make(**setting_overrides) -> Dispatcher:
        return Dispatcher(session_factory=session_factory, settings=settings.model_copy(update=setting_overrides),
                          executor=fake_executor)

    return make


def run_of(session_factory, run_id) -> Run:
    with session_factory() as s:
        return runs_store.get_run(s, run_id=run_id)


def test_happy_path_streams_metrics_and_records_results_once(submit, dispatcher, fake_executor, session_factory):
    r1, r2 = submit()
    d = dispatcher()
    d.tick()
    assert [run_of(session_factory, r).status for r in (r1, r2)] == ["training", "training"]
    assert len(fake_executor.submitted) == 2
    fake_executor.write_metrics(r1, [25, 50])
    d.tick()
    run = run_of(session_factory, r1)
    assert run.current_step == 50 and run.latest_metrics["loss"] == pytest.approx(1 / 51)
    assert run.attempts[0].start_step == 25 and run.started_at is not None
    fake_executor.job_for(r1).phase = "evaluating"
    fake_executor.job_for(r1).extra = {"usage": {"device": "cpu", "num_workers": 1, "wall_s": 12.0, "cpu_worker_hours": 0.0033}}
    d.tick()
    assert run_of(session_factory, r1).status == "evaluating"
    assert run_of(session_factory, r1).usage["wall_s"] == 12.0  # recorded with the run (GET /runs/{id}: usage)
    fake_executor.write_metrics(r1, [75, 100])
    fake_executor.succeed(r1)
    d.tick()
    d.tick()
    run = run_of(session_factory, r1)
    assert run.status == "succeeded" and run.finished_at is not None and run.current_step == 100
    assert run.attempts[0].status == "succeeded"
    assert fake_executor.job_for(r1).released
    with session_factory() as s:
        assert s.query(Result).filter_by(run_id=r1).count() == 2
        assert [p.step for p in runs_store.get_metrics(s, run_id=r1)] == [25, 50, 75, 100]


def test_retry_resumes_then_gives_up_with_readable_error(submit, dispatcher, fake_executor, session_factory):
    (r1,) = submit(weightings=[{"name": "constant"}])
    d = dispatcher(max_attempts=2)
    d.tick()
    fake_executor.write_metrics(r1, [25, 50])
    fake_executor.job_for(r1).phase, fake_executor.job_for(r1).error = "failed", "RuntimeError: worker died"
    d.tick()  # failed -> queued -> resubmitted as attempt 2 in the same pass
    run = run_of(session_factory, r1)
    assert run.status == "training" and [(a.status, a.error) for a in run.attempts] == [
        ("failed", "RuntimeError: worker died"), ("running", None)]
    fake_executor.write_metrics(r1, [50, 75])  # the trainer resumed from its step-50 checkpoint
    d.tick()
    run = run_of(session_factory, r1)
    assert [a.number for a in run.attempts] == [1, 2] and run.attempts[1].start_step == 50
    with session_factory() as s:  # re-logged steps overwrite, never duplicate
        assert [p.step for p in runs_store.get_metrics(s, run_id=r1)] == [25, 50, 75]
    fake_executor.job_for(r1).phase, fake_executor.job_for(r1).error = "failed", "ValueError: loss is NaN"
    d.tick()
    run = run_of(session_factory, r1)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "failed after 2 attempts: ValueError: loss is NaN" and "Traceback" not in run.error
    d.tick()
    assert len(fake_executor.submitted) == 2  # terminal is final


def test_capacity_limits_concurrent_runs(submit, dispatcher, fake_executor, session_factory):
    ids = submit(weightings=[{"name": "constant"}, {"name": "debias"}, {"name": "p2"}],
                 resources={"workers_per_run": 2, "gpus_per_worker": 0})
    fake_executor.slots = 4  # room for two runs of two workers
    d = dispatcher()
    d.tick()
    assert [run_of(session_factory, r).status for r in ids] == ["training", "training", "queued"]
    fake_executor.succeed(ids[0])
    d.tick()  # the finished run frees its slot in the same pass
    assert [run_of(session_factory, r).status for r in ids] == ["succeeded", "training", "training"]


def test_max_concurrent_runs_setting(submit, dispatcher, session_factory):
    ids = submit()
    dispatcher(max_concurrent_runs=1).tick()
    assert sorted(run_of(session_factory, r).status for r in ids) == ["queued", "training"]


def test_submit_failure_is_an_attempt_failure(submit, dispatcher, fake_executor, session_factory):
    (r1,) = submit(weightings=[{"name": "constant"}])
    fake_executor.fail_submit = True
    d = dispatcher(max_attempts=1)
    d.tick()
    run = run_of(session_factory, r1)
    assert run.status == "failed" and "RuntimeError: cluster unreachable" in run.error


def test_cancel_stops_live_runs(submit, dispatcher, fake_executor, session_factory):
    r1, r2 = submit()
    d = dispatcher()
    d.tick()
    fake_executor.succeed(r2)
    d.tick()
    with session_scope(session_factory) as s:
        exp_id = runs_store.get_run(s, run_id=r1).experiment_id
        domain_experiments.cancel_experiment(s, experiment_id=exp_id)
    d.tick()
    assert fake_executor.job_for(r1).cancelled
    run = run_of(session_factory, r1)
    assert run.status == "cancelled" and run.attempts[0].status == "cancelled" and run.finished_at
    assert run_of(session_factory, r2).status == "succeeded"  # finished runs keep their result
    with session_factory() as s:
        assert domain_experiments.experiment_view(experiments_store.get_experiment(s, experiment_id=exp_id))["status"] == "cancelled"


def test_restart_readopts_live_jobs(submit, dispatcher, fake_executor, session_factory):
    r1, r2 = submit()
    dispatcher().tick()
    fake_executor.write_metrics(r1, [25])
    # the service dies; its Ray jobs keep going; a new dispatcher (new process) starts
    d2 = dispatcher()
    d2.reconcile()
    d2.tick()
    assert len(fake_executor.submitted) == 2  # nothing submitted twice
    fake_executor.succeed(r1)
    fake_executor.succeed(r2)
    d2.tick()
    d2.tick()
    for r in (r1, r2):
        run = run_of(session_factory, r)
        assert run.status == "succeeded" and len(run.attempts) == 1
    with session_factory() as s:
        assert s.query(Result).count() == 4


def test_restart_requeues_lost_jobs_without_spending_an_attempt(submit, dispatcher, fake_executor, session_factory):
    (r1,) = submit(weightings=[{"name": "constant"}])
    dispatcher(max_attempts=1).tick()
    fake_executor.write_metrics(r1, [25, 50])
    fake_executor.jobs.clear()  # the cluster went down with the service
    d2 = dispatcher(max_attempts=1)
    d2.reconcile()
    run = run_of(session_factory, r1)
    assert run.status == "queued" and run.attempts[0].status == "lost"
    d2.tick()
    assert run_of(session_factory, r1).status == "training"  # a lost attempt is not a failure
    fake_executor.write_metrics(r1, [50, 75, 100])  # resumed from the step-50 checkpoint
    d2.tick()
    run = run_of(session_factory, r1)
    assert run.status == "training" and run.attempts[1].start_step == 50
    fake_executor.succeed(r1)
    d2.tick()
    assert run_of(session_factory, r1).status == "succeeded"


def test_results_replayed_after_restart_are_recorded_once(session_factory, submit):
    (r1,) = submit(weightings=[{"name": "constant"}])
    cells = [{"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 1.0}]
    with session_scope(session_factory) as s:
        assert runs_store.record_results(s, run_id=r1, results=cells) == 1
    with session_scope(session_factory) as s:
        assert runs_store.record_results(s, run_id=r1, results=cells + cells) == 0
    with session_factory() as s:
        assert s.scalar(select(Result.value).where(Result.run_id == r1)) == 1.0
        assert s.query(Result).count() == 1


def test_unknown_metric_lines_are_ignored(submit, dispatcher, fake_executor, session_factory, settings):
    (r1,) = submit(weightings=[{"name": "constant"}])
    d = dispatcher()
    d.tick()
    path = settings.runs_dir / r1 / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"event": "start", "step": 0}\nnot json\n{"step": 10, "loss": 0.5}\n{"step": 20, "lo')  # torn last line
    d.tick()
    with session_factory() as s:
        assert [p.step for p in s.scalars(select(MetricPoint).order_by(MetricPoint.step))] == [10]
    assert run_of(session_factory, r1).attempts[0].start_step == 0  # from the trainer's start event
    with path.open("a") as f:
        f.write('ss": 0.25}\n')
    d.tick()
    assert run_of(session_factory, r1).current_step == 20


def test_attempt_rows_are_unique_per_run(session_factory, submit):
    (r1,) = submit(weightings=[{"name": "constant"}])
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with session_scope(session_factory) as s:
            s.add_all([Attempt(run_id=r1, number=1), Attempt(run_id=r1, number=1)])


def test_cancel_requested_while_the_service_was_down(submit, dispatcher, fake_executor, session_factory):
    (r1,) = submit(weightings=[{"name": "constant"}])
    dispatcher().tick()
    with session_scope(session_factory) as s:
        domain_experiments.cancel_experiment(s, experiment_id=runs_store.get_run(s, run_id=r1).experiment_id)
    fake_executor.jobs.clear()  # ...and the job vanished with the cluster
    d2 = dispatcher()
    d2.reconcile()
    d2.tick()
    run = run_of(session_factory, r1)
    assert run.status == "cancelled" and [a.status for a in run.attempts] == ["lost"]
    assert len(fake_executor.submitted) == 1


def test_restart_releases_jobs_of_finished_runs(submit, dispatcher, fake_executor, session_factory):
    r1, r2 = submit()
    dispatcher().tick()
    fake_executor.succeed(r1)
    # the service recorded r1's success, then died before releasing its job
    with session_scope(session_factory) as s:
        run = runs_store.get_run(s, run_id=r1)
        runs_store.record_results(s, run_id=r1, results=fake_executor.job_for(r1).results)
        run.attempts[0].status = "succeeded"
        transition(run, RunStatus.SUCCEEDED)
    dispatcher().reconcile()
    assert fake_executor.job_for(r1).released and not fake_executor.job_for(r2).released


def test_intermediate_results_are_recorded_while_training(submit, dispatcher, fake_executor, session_factory):
    """`evaluation.at_steps`: the job reports rows of intermediate checkpoints while it trains;
    they land in SQL at once, and the final replay (which repeats them) records each cell once."""
    evaluation = {"steps": [5], "samplers": ["ddpm"], "num_samples": 64, "metrics": ["fd_digits"], "at_steps": [40]}
    (r1,) = submit(weightings=[{"name": "constant"}], evaluation=evaluation)
    d = dispatcher()
    d.tick()
    exp_id = run_of(session_factory, r1).experiment_id
    job = fake_executor.job_for(r1)
    assert job.job.run.train.snapshot_steps == job.job.run.evaluation.at_steps == [40]  # one source: at_steps
    early = [{"train_step": 40, "num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 9.0}]
    job.results = early
    d.tick()
    assert run_of(session_factory, r1).status == "training"
    with session_factory() as s:
        rows = s.scalars(select(Result).where(Result.run_id == r1)).all()
        assert [(r.train_step, r.value) for r in rows] == [(40, 9.0)]
        assert domain_leaderboard.leaderboard(s, experiment_id=exp_id).rows == []
    job.phase = "succeeded"
    job.results = early + [{"num_steps": 5, "sampler": "ddpm", "metric": "fd_digits", "value": 4.0}]  # final: no train_step
    d.tick()
    with session_factory() as s:
        run = runs_store.get_run(s, run_id=r1)
        rows = s.scalars(select(Result).where(Result.run_id == r1).order_by(Result.train_step)).all()
        assert [(r.train_step, r.value) for r in rows] == [(40, 9.0), (run.total_steps, 4.0)]
        final = domain_leaderboard.leaderboard(s, experiment_id=run.experiment_id)
        assert [(row.train_step, row.cells["constant"].mean) for row in final.rows] == [(run.total_steps, 4.0)]
        every = domain_leaderboard.leaderboard(s, experiment_id=run.experiment_id, train_steps="all")
        assert [(row.train_step, row.cells["constant"].mean) for row in every.rows] == [(40, 9.0), (run.total_steps, 4.0)]
