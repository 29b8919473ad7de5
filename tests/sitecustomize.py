"""Imported at start-up by every Python process the tests start (``tests/`` is on their
``PYTHONPATH``, see conftest.py), stock ``rq worker`` processes included.

redis-py 8.2's ``PubSubWorkerThread.stop()`` waits for the listener thread, whose read lasts up
to ``sleep_time`` (rq 3.0 passes 60 s), and rq 3.0 sends UNSUBSCRIBE (which wakes the read)
before it calls ``stop()``: about one stock worker in three then takes 60 s to exit, whatever it
did before. That is rq's and redis-py's (aiorq's own rq worker classes avoid it, see
``aiorq.tracing.TracingWorkerMixin.unsubscribe``); the tests judge what rq writes, not how long
its shutdown waits, so here ``stop()`` waits no longer than it did before 8.2 (rq joins the
thread for 1 s itself right after).
"""

from __future__ import annotations

import inspect
from typing import Any

try:
    from redis.client import PubSubWorkerThread
except Exception:  # no redis-py in this interpreter
    PubSubWorkerThread = None  # type: ignore[assignment,misc]

if PubSubWorkerThread is not None and 'timeout' in inspect.signature(PubSubWorkerThread.stop).parameters:
    _stop = PubSubWorkerThread.stop

    def _stop_without_waiting(self: Any, timeout: float | None = None) -> None:
        _stop(self, 0 if timeout is None else timeout)

    PubSubWorkerThread.stop = _stop_without_waiting  # type: ignore[method-assign]
