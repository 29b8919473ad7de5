"""streaQ's side of ``benchmarks/suite.py``: one ``streaq.Worker`` definition shared by the client
and the worker process (``suite_worker.py streaq``), and the client's enqueue, pre-fill and check.

streaQ registers its tasks on a ``Worker`` object; the client and the worker build the same one
(queue ``bench``, the no-ops of ``suite_jobs`` registered under their own names) from the URL.
The tasks are registered ``silent=True``: the worker would otherwise format a log line for every
task (an f-string with the shortened result) that the benchmark then drops, which aiorq, arq and
saq (at logging level WARNING) do not do.
"""

from __future__ import annotations

import pickle
from typing import Any

import suite_jobs
from suite_core import BATCH, QUEUE, RunError, gather_limited


def make_worker(url: str, concurrency: int = 100, queue: str = QUEUE) -> tuple[Any, Any, Any]:
    """(worker, the async no-op task, the plain no-op task), as streaQ's docs define them."""
    from streaq import Worker

    worker = Worker(redis_url=url, queue_name=queue, concurrency=concurrency)
    async_task = worker.task(silent=True)(suite_jobs.async_noop)
    plain_task = worker.task(silent=True)(suite_jobs.noop)
    return worker, async_task, plain_task


def stream_key(queue: str = QUEUE) -> str:
    """streaQ's stream of ready tasks of the default priority (``streaq:<queue>:queues:normal``)."""
    return f'streaq:{queue}:queues:normal'


async def enqueue(url: str, n: int, mode: str) -> list[str]:
    """Enqueue n async no-ops one call at a time (``seq``), 100 in flight (``gather``) or with
    ``Worker.enqueue_many`` in batches (``many``); the ids of the tasks, in order."""
    worker, task, _ = make_worker(url)
    async with worker:
        if mode == 'seq':
            return [(await task.enqueue(i)).id for i in range(n)]
        if mode == 'gather':
            return [t.id for t in await gather_limited(n, lambda i: _enqueued(task, i))]
        ids: list[str] = []
        for start in range(0, n, BATCH):
            batch = [task.enqueue(i) for i in range(start, min(n, start + BATCH))]
            await worker.enqueue_many(batch)
            ids += [t.id for t in batch]
        return ids


async def _enqueued(task: Any, i: int) -> Any:
    return await task.enqueue(i)


async def prefill(url: str, kind: str, n: int) -> list[str]:
    """n tasks of ``kind`` (async or plain no-op) queued with ``enqueue_many``; their ids."""
    worker, async_task, plain_task = make_worker(url)
    task = async_task if kind == 'async' else plain_task
    ids: list[str] = []
    async with worker:
        for start in range(0, n, BATCH):
            batch = [task.enqueue(i) for i in range(start, min(n, start + BATCH))]
            await worker.enqueue_many(batch)
            ids += [t.id for t in batch]
    return ids


async def verify(url: str, ids: list[str]) -> tuple[float, float]:
    """Every task succeeded with its index as result; (first start, last finish) as timestamps."""
    worker, _, _ = make_worker(url)
    async with worker:
        raws: list[Any] = []
        for start in range(0, len(ids), BATCH):
            raws += await worker.redis.mget([worker.results_key + i for i in ids[start : start + BATCH]])
        starts, ends = [], []
        for i, (task_id, raw) in enumerate(zip(ids, raws)):
            if raw is None:
                raise RunError(f'streaQ task {task_id} has no result')
            data = pickle.loads(raw if isinstance(raw, bytes) else raw.encode('latin-1'))
            if not data['s'] or data['r'] != i:
                raise RunError(f'streaQ task {task_id}: success={data["s"]} result={data["r"]!r}, expected {i}')
            starts.append(data['st'] / 1000)
            ends.append(data['ft'] / 1000)
        left = await worker.queue_size()
        if left:
            raise RunError(f'{left} tasks left in the streaQ queue')
        return min(starts), max(ends)
