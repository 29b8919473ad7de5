"""Resources shared by all jobs of a worker, opened by its start-up hooks."""

from __future__ import annotations

from contextvars import ContextVar
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker

_current_worker: ContextVar[Worker | None] = ContextVar('aiorq_current_worker', default=None)


class WorkerState(SimpleNamespace):
    """A namespace: start-up hooks set attributes (``state.http = session``), jobs read them."""


def get_current_worker() -> Worker | None:
    """The aiorq worker running the current job (``None`` outside one)."""
    return _current_worker.get()


def get_worker_state() -> WorkerState:
    """The running worker's shared state, e.g. ``get_worker_state().http`` inside a job."""
    worker = _current_worker.get()
    if worker is None:
        raise RuntimeError('get_worker_state() is only available inside a job run by an aiorq worker')
    return worker.state
