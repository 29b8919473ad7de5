"""Resources shared by all jobs of a worker, opened by its start-up hooks."""

from __future__ import annotations

from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any


class WorkerState(SimpleNamespace):
    """A namespace: start-up hooks set attributes (``state.http = session``), jobs read them."""


# The worker running the job (an ``aiorq_worker.Worker``; in a ``--sync-jobs process`` child, a
# stand-in with its ``name`` and ``state``), set by the executor in the job's context.
_current_worker: ContextVar[Any] = ContextVar('aiorq_current_worker', default=None)


def get_current_worker() -> Any:
    """The aiorq worker running the current job (``None`` outside one)."""
    return _current_worker.get()


def get_worker_state() -> WorkerState:
    """The running worker's shared state, e.g. ``get_worker_state().http`` inside a job."""
    worker = _current_worker.get()
    if worker is None:
        raise RuntimeError('get_worker_state() is only available inside a job run by an aiorq worker')
    return worker.state
