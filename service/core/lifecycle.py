"""Lifecycles: str Enums with explicit transition tables (runs, their attempts, sweeps) and the
derived experiment state. One `TERMINAL` set; `transition` is the only way a state changes: it
checks the table and stamps the times, on any object with the state's fields (the ORM rows)."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from service.core.errors import InvalidTransitionError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class State(str, Enum):
    def is_terminal(self) -> bool:
        return self.value in TERMINAL


TERMINAL = frozenset({"succeeded", "failed", "cancelled", "lost"})  # `lost` ends an attempt only


class RunStatus(State):
    QUEUED = "queued"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A failed or lost attempt sends its run back to QUEUED (resume from the last checkpoint) while attempts remain.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.TRAINING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.TRAINING: frozenset(
        {RunStatus.EVALUATING, RunStatus.QUEUED, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.EVALUATING: frozenset({RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}
LIVE_RUN = (RunStatus.TRAINING, RunStatus.EVALUATING)


class AttemptStatus(State):
    """One submission of a run to the executor. `lost`: its worker went away (a node died, the
    service's own Ray went down): not the run's fault, so it spends no failed attempt."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


ATTEMPT_TRANSITIONS: dict[AttemptStatus, frozenset[AttemptStatus]] = {
    AttemptStatus.RUNNING: frozenset({AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.LOST,
                                      AttemptStatus.CANCELLED}),
    **{s: frozenset() for s in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.LOST, AttemptStatus.CANCELLED)},
}


class SweepStatus(State):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


SWEEP_TRANSITIONS: dict[SweepStatus, frozenset[SweepStatus]] = {
    SweepStatus.QUEUED: frozenset({SweepStatus.RUNNING, SweepStatus.FAILED, SweepStatus.CANCELLED}),
    SweepStatus.RUNNING: frozenset({SweepStatus.SUCCEEDED, SweepStatus.FAILED, SweepStatus.CANCELLED}),
    SweepStatus.SUCCEEDED: frozenset(),
    SweepStatus.FAILED: frozenset(),
    SweepStatus.CANCELLED: frozenset(),
}
LIVE_SWEEP = (SweepStatus.QUEUED, SweepStatus.RUNNING)

TABLES: dict[type[State], dict[Any, frozenset]] = {
    RunStatus: RUN_TRANSITIONS, AttemptStatus: ATTEMPT_TRANSITIONS, SweepStatus: SWEEP_TRANSITIONS,
}


def check_transition(src: State, dst: State) -> None:
    if dst not in TABLES[type(dst)][type(dst)(src)]:
        raise InvalidTransitionError(f"{type(dst).__name__.removesuffix('Status').lower()} cannot go from "
                                     f"{type(dst)(src).value} to {dst.value}")


def transition(row: Any, to: State, **fields: Any) -> Any:
    """Move `row` (a run, an attempt or a sweep) to `to`: checked against its table; the first
    start and every end are stamped (`started_at` of a run, `finished_at` of all three)."""
    check_transition(row.status, to)
    row.status = to.value
    for k, v in fields.items():
        setattr(row, k, v)
    now = utcnow()
    if to is RunStatus.TRAINING and row.started_at is None:
        row.started_at = now
    if to.is_terminal():
        row.finished_at = now
        if isinstance(to, RunStatus):
            row.cancel_requested = False
    return row


class ExperimentStatus(State):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def experiment_status(run_states: Iterable[str]) -> ExperimentStatus:
    """Derive an experiment's state from its runs: running while any run is live, then
    failed > cancelled > succeeded."""
    states = [RunStatus(s) for s in run_states]
    if not states or all(s is RunStatus.QUEUED for s in states):
        return ExperimentStatus.QUEUED
    if any(not s.is_terminal() for s in states):
        return ExperimentStatus.RUNNING
    if RunStatus.FAILED in states:
        return ExperimentStatus.FAILED
    if RunStatus.CANCELLED in states:
        return ExperimentStatus.CANCELLED
    return ExperimentStatus.SUCCEEDED
