"""A background loop: one daemon thread that runs a pass every interval or as soon as it is woken;
a failing pass is logged (and kept as `last_error`) and the loop goes on. The dispatcher and the
sweep manager are both one."""
from __future__ import annotations

import logging
import threading

from service.core.errors import readable_error

log = logging.getLogger(__name__)


class BackgroundLoop:
    name = "snrlab-loop"

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:  # one pass
        raise NotImplementedError

    def prepare(self) -> bool:
        """Runs on the loop's thread before the first pass; False ends the loop (it was stopped)."""
        return True

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def stopped(self, wait_s: float = 0) -> bool:
        """True once stop() was called (waiting up to wait_s for it)."""
        return self._stop.wait(wait_s)

    def _run(self) -> None:
        if not self.prepare():
            return
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - the loop must survive a bad pass
                self.last_error = readable_error(e)
                log.exception("%s: a pass failed", self.name)
            self._wake.wait(self.interval_s)
            self._wake.clear()
