"""The app factory and its lifespan: migrate, connect, reconcile, dispatch; the composition root
(every room is wired here and nowhere else)."""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from service.api import errors, experiments, health, leaderboard, queue, rescore, runs, sweeps
from service.api.cache import VersionedCache
from service.app.middleware import BodySizeLimit, SecurityHeaders
from service.core.config import Settings, check_shared_storage, get_settings
from service.core.version import code_version
from service.runtime.dispatcher import Dispatcher
from service.runtime.executor import Executor, build_executor
from service.runtime.lease import Lease, LeaseKeeper, SecondReplica
from service.runtime.sweep_manager import SweepManager
from service.store.db import make_engine, make_sessionmaker, upgrade
from service.web import pages

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# SecondReplica is re-exported for `snrlab serve` (client/ reaches the runtime only through app/)
__all__ = ["API_PREFIX", "SecondReplica", "create_app", "pid_alive", "refuse_second_replica"]


def create_app(settings: Settings | None = None, *, executor: Executor | None = None, **dispatcher_kwargs) -> FastAPI:
    settings = settings or get_settings()
    check_shared_storage(settings)  # a cluster address needs a data directory every node reaches

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        url = settings.resolved_database_url
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await run_in_threadpool(upgrade, url)
        engine = make_engine(url)
        app.state.session_factory = make_sessionmaker(engine)
        app.state.results_cache = VersionedCache()  # with its engine: versions are this database's
        dispatcher = sweep_manager = keeper = None
        if settings.dispatcher_enabled:
            # Every replica serves; the lease holder alone dispatches (service.runtime.lease).
            lease = Lease(app.state.session_factory, ttl_s=settings.lease_ttl_s)
            if engine.dialect.name == "sqlite":
                lease.check_single_replica(alive=pid_alive)  # SecondReplica: refused, with the reason
            app.state.lease = lease
            dispatcher = Dispatcher(session_factory=app.state.session_factory, settings=settings,
                                    executor=executor or build_executor(settings), lease=lease, **dispatcher_kwargs)
            # On this thread (the event loop's), not in the request thread pool: Ray's GCS and raylet
            # die with the thread that started them (PR_SET_PDEATHSIG), and the pool retires threads
            # that sit idle for 10 s, which after a burst of requests took the local Ray down with it.
            # Nothing is served until the lifespan has started, so blocking here costs no request.
            dispatcher.start()
            # sweeps: Tune picks points, the dispatcher runs them (service.runtime.sweep_manager)
            sweep_manager = SweepManager(session_factory=app.state.session_factory, settings=settings,
                                         executor=dispatcher.executor, on_new_runs=dispatcher.wake,
                                         ready=lambda: dispatcher.connected and dispatcher.leading, write=lease.write)
            sweep_manager.start()
            keeper = LeaseKeeper(lease, version=app.state.code_version, interval_s=settings.lease_renew_s,
                                 on_elected=_woken(dispatcher.elected, sweep_manager.wake), on_lost=dispatcher.lost,
                                 ready=lambda: dispatcher.connected)
            dispatcher.on_connected = keeper.wake  # joined Ray later (an address that was down): lead at once
            keeper.tick()  # the first try at once: a lone replica leads from its first dispatcher pass
            keeper.start()
        app.state.dispatcher = dispatcher
        app.state.wake_dispatcher = dispatcher.wake if dispatcher else (lambda: None)
        app.state.wake_sweeps = sweep_manager.wake if sweep_manager else (lambda: None)
        try:
            yield
        finally:
            if keeper is not None:
                await run_in_threadpool(keeper.stop)
            if sweep_manager is not None:
                await run_in_threadpool(sweep_manager.stop)
            if dispatcher is not None:
                await run_in_threadpool(dispatcher.stop)
            if keeper is not None:
                # after the last dispatcher write, before the local Ray's teardown (seconds): a
                # standby takes over on its next try
                await run_in_threadpool(keeper.leave)
            if dispatcher is not None:
                dispatcher.executor.shutdown()  # one shutdown path for SIGINT and SIGTERM alike
            engine.dispose()

    app = FastAPI(
        title="snrlab", version=code_version(), lifespan=lifespan,
        description="Experiments on diffusion loss weightings: specs in, Ray jobs out, results in SQL.",
    )
    app.state.settings = settings
    app.state.code_version = code_version()
    app.state.dispatcher = None
    app.state.lease = None
    app.state.wake_dispatcher = lambda: None
    app.state.wake_sweeps = lambda: None
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    errors.register(app)
    for module in (experiments, runs, rescore, leaderboard, health, sweeps, queue):
        app.include_router(module.router, prefix=API_PREFIX)
    app.add_api_route("/healthz", health.healthz, include_in_schema=False)
    app.add_api_route("/readyz", health.readyz, include_in_schema=False)
    pages.register(app)  # the pages (leaderboard, experiments, runs) beside the API
    return app


def refuse_second_replica(settings: Settings) -> None:
    """`snrlab serve` on SQLite, before uvicorn and Ray start: SecondReplica (with the reason) when
    another live service already dispatches from that file. The lifespan checks again."""
    url = settings.resolved_database_url
    if not settings.dispatcher_enabled or make_url(url).get_backend_name() != "sqlite":
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    try:
        Lease(make_sessionmaker(engine)).check_single_replica(alive=pid_alive)
    finally:
        engine.dispose()


def _woken(*callbacks):
    def call() -> None:
        for cb in callbacks:
            cb()
    return call


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (signal 0 sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
