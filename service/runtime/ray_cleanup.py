"""Free Ray Train placement groups that outlive their run.

Ray Train V2 reserves a placement group from its controller actor. When the controller dies
ungracefully (we kill the run's actor to cancel it; a node or the service goes down), Train's
own PlacementGroupCleaner must query the state API, which needs the dashboard; without one
the reservation leaks and the cluster's capacity shrinks for good. So we reap them here: a
placement group whose creator actor is dead and descends from one of our run actors
(`snrlab-run_…`, via the owner chain) is removed. Uses the GCS tables (no dashboard needed);
the one place in the service that touches Ray internals."""
from __future__ import annotations

import logging

from ray._private.state import state
from ray._raylet import PlacementGroupID
from ray.core.generated import gcs_pb2
from ray.util.placement_group import PlacementGroup, remove_placement_group

log = logging.getLogger(__name__)

RUN_ACTOR_PREFIX = "snrlab-run_"


def _tables():

    accessor = state._connect_and_get_accessor()
    actors = [gcs_pb2.ActorTableData.FromString(b) for b in accessor.get_actor_table(None, None)]
    groups = [gcs_pb2.PlacementGroupTableData.FromString(b) for b in accessor.get_placement_group_table()]
    return actors, groups, gcs_pb2


def placement_groups_of(actor_name: str) -> set[bytes]:
    """Ids of the live placement groups reserved under the run actor `actor_name`."""
    try:
        actors, groups, gcs_pb2 = _tables()
    except Exception:  # noqa: BLE001
        return set()
    by_id = {a.actor_id: a for a in actors}
    by_worker = {a.address.worker_id: a for a in actors if a.address.worker_id}
    out = set()
    for pg in groups:
        creator = by_id.get(pg.creator_actor_id)
        if pg.state != gcs_pb2.PlacementGroupTableData.REMOVED and creator is not None:
            if _descends_from_run_actor(creator, by_worker, exact=actor_name):
                out.add(pg.placement_group_id)
    return out


def reap_placement_groups() -> int:
    """Remove leaked placement groups of our runs; returns how many were removed."""

    try:
        actors, groups, gcs_pb2 = _tables()
    except Exception:  # noqa: BLE001 - best effort; never break the dispatcher
        log.exception("cannot read the GCS tables")
        return 0
    by_id = {a.actor_id: a for a in actors}
    by_worker = {a.address.worker_id: a for a in actors if a.address.worker_id}
    removed_state = gcs_pb2.PlacementGroupTableData.REMOVED
    dead_state = gcs_pb2.ActorTableData.DEAD
    removed = 0
    for pg in groups:
        if pg.state == removed_state or pg.is_detached:
            continue
        creator = by_id.get(pg.creator_actor_id)
        if creator is None or not (pg.creator_actor_dead or creator.state == dead_state):
            continue
        if not _descends_from_run_actor(creator, by_worker):
            continue
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(pg.placement_group_id)))
            removed += 1
        except Exception:  # noqa: BLE001
            log.exception("removing placement group %s failed", pg.placement_group_id.hex())
    if removed:
        log.info("removed %d leaked Ray Train placement group(s)", removed)
    return removed


def _descends_from_run_actor(actor, by_worker, exact: str | None = None) -> bool:
    seen = set()
    while actor is not None and actor.actor_id not in seen:
        if actor.name == exact if exact else actor.name.startswith(RUN_ACTOR_PREFIX):
            return True
        seen.add(actor.actor_id)
        actor = by_worker.get(actor.owner_address.worker_id)
    return False
