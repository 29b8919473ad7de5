"""Start-up and shutdown hooks of an aiorq worker (docs/worker.md): resources shared by its jobs.

A hook is a coroutine function that receives the worker; what it puts on ``worker.state``, jobs
read with ``aiorq_worker.get_worker_state()``. Real workers keep an HTTP session or a database
pool there; this example keeps a counter, so that it runs anywhere.
"""

from __future__ import annotations

from collections import Counter

from aiorq_worker import Worker, get_worker_state


async def startup(worker: Worker) -> None:
    worker.state.visits = Counter()  # opened once, before the first job


async def shutdown(worker: Worker) -> None:
    print('visits counted by this worker:', dict(worker.state.visits))  # after the last job


async def count_visit(page: str) -> int:
    """A job: count one visit of ``page`` in the worker's shared counter."""
    visits = get_worker_state().visits
    visits[page] += 1
    return visits[page]
