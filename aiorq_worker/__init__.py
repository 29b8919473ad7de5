"""The asyncio worker for aiorq: ``aiorq worker my_queue`` serves rq 3.0 queues beside stock workers."""

from .state import WorkerState, get_current_worker, get_worker_state
from .worker import DEFAULT_CONCURRENCY, SuspendedError, Worker

__all__ = ['DEFAULT_CONCURRENCY', 'SuspendedError', 'Worker', 'WorkerState', 'get_current_worker', 'get_worker_state']
