"""Run lifecycle: a str Enum, an explicit transition table, and the derived experiment state."""
from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from service.core.errors import InvalidTransitionError


class RunStatus(str, Enum):
    QUEUED = "queued"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

# A failed attempt goes back to QUEUED (retry from its last checkpoint) while attempts remain.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.TRAINING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.TRAINING: frozenset(
        {RunStatus.EVALUATING, RunStatus.QUEUED, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.EVALUATING: frozenset({RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def check_transition(src: RunStatus, dst: RunStatus) -> None:
    if dst not in TRANSITIONS[src]:
        raise InvalidTransitionError(f"run cannot go from {src.value} to {dst.value}")


class ExperimentStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (ExperimentStatus.SUCCEEDED, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED)


def experiment_status(run_states: Iterable[RunStatus]) -> ExperimentStatus:
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
