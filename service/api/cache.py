"""Responses cached under the database's results version (store.leaderboard.results_version):
valid exactly while the version stands, so a hit needs one one-row query and no aggregation. The
ETag names the version and the query; a client that sends it back (If-None-Match) gets a 304.
A hit is served on the event loop (GETs only: a reader's session takes no lock, see api.deps);
a miss builds in a worker thread. The version is read before the build, in the build's
transaction, so a body is never older than the version it is filed under. One cache per app
(`app.state.results_cache`): a version means something only in its own database."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service.api.deps import is_read
from service.store.leaderboard import results_version


class VersionedCache:
    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[tuple, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    async def respond(self, request: Request, session: Session, key: tuple, build: Callable[[], bytes], media_type: str,
                      headers: dict[str, str] | None = None) -> Response:
        """The cached body of `key` at the current version (built on a miss), or a 304."""
        if not is_read(request):
            raise ValueError("only GET and HEAD responses are cached")
        version = results_version(session)
        if version is None:  # no counter row: nothing can be cached safely
            return Response(await run_in_threadpool(build), media_type=media_type, headers=headers)
        full = (version, *key)
        with self._lock:
            item = self._items.get(full)
            if item is not None:
                self._items.move_to_end(full)
                self.hits += 1
        if item is None:
            self.misses += 1
            body = await run_in_threadpool(build)
            etag = '"' + hashlib.sha256(repr(full).encode()).hexdigest()[:20] + '"'
            item = (etag, body)
            with self._lock:
                self._items[full] = item
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        etag, body = item
        cache_headers = {"ETag": etag, "Cache-Control": "private, no-cache", **(headers or {})}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=cache_headers)
        return Response(body, media_type=media_type, headers=cache_headers)


async def cached(request: Request, session: Session, key: tuple, build: Callable[[], bytes], media_type: str,
                 headers: dict[str, str] | None = None) -> Response:
    """`VersionedCache.respond` on the app's cache."""
    return await request.app.state.results_cache.respond(request, session, key, build, media_type, headers)
