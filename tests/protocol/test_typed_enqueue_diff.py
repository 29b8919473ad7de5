"""A typed enqueue (``task.delay``, ``task.options(...).delay``) writes exactly what stock rq's
``Queue.enqueue`` / ``enqueue_at`` / ``enqueue_in`` write for the same call and options."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import rq
import typed_tasks
from diffkit import a, all_enqueue_options, compare

import aiorq

CASES: dict[str, Any] = {}
QUEUE = typed_tasks.QUEUE


def case(fn: Any) -> Any:
    CASES[fn.__name__] = fn
    return fn


async def typed(conn: Any, enqueue: Callable[[], Awaitable[Any]]) -> Any:
    """aiorq's side: the typed tasks enqueue on the current connection."""
    aiorq.push_connection(conn)
    try:
        return await enqueue()
    finally:
        aiorq.pop_connection()


@case
async def delay(lib: Any, conn: Any) -> Any:
    # The decorator's result_ttl=600; rq's delay takes job_id out of the keywords.
    if lib is rq:
        return rq.Queue(QUEUE, connection=conn).enqueue(typed_tasks.add, 1, b=2, job_id='t1', result_ttl=600)
    return await typed(conn, lambda: typed_tasks.add.delay(1, b=2, job_id='t1'))  # type: ignore[call-arg]


@case
async def every_option(lib: Any, conn: Any) -> Any:
    options = all_enqueue_options('t1')
    if lib is rq:
        q = rq.Queue(QUEUE, connection=conn)
        q.enqueue(typed_tasks.add, 0, job_id='parent', result_ttl=600)
        q.enqueue(typed_tasks.add, 1, job_id='front', result_ttl=600)
        return q.enqueue(typed_tasks.resize, 'a.png', width=640, depends_on='parent', at_front=True, **options)

    async def enqueue() -> Any:
        parent = await typed_tasks.add.options(job_id='parent').delay(0)
        await typed_tasks.add.options(job_id='front').delay(1)
        return await typed_tasks.resize.options(depends_on=parent, at_front=True, **options).delay('a.png', width=640)

    return await typed(conn, enqueue)


@case
async def at_front_and_unique(lib: Any, conn: Any) -> Any:
    if lib is rq:
        q = rq.Queue(QUEUE, connection=conn)
        q.enqueue(typed_tasks.resize, 'a.png', 1, job_id='t1')
        return q.enqueue(typed_tasks.resize, 'b.png', 2, job_id='t2', at_front=True, unique=True, ttl=30)
    opts = typed_tasks.resize.options(at_front=True, unique=True, ttl=30)

    async def enqueue() -> Any:
        await typed_tasks.resize.options(job_id='t1').delay('a.png', 1)
        return await opts.options(job_id='t2').delay('b.png', 2)

    return await typed(conn, enqueue)


@case
async def rate_limited(lib: Any, conn: Any) -> Any:
    limit = rq.RateLimit('api', 2)
    if lib is rq:
        q = rq.Queue(QUEUE, connection=conn)
        return [q.enqueue(typed_tasks.resize, 'a', i, job_id=f'j{i}', rate_limit=limit) for i in range(3)]
    opts = typed_tasks.resize.options(rate_limit=limit)
    return await typed(conn, lambda: _each(opts, 3))


async def _each(opts: Any, n: int) -> list[Any]:
    return [await opts.options(job_id=f'j{i}').delay('a', i) for i in range(n)]


@case
async def enqueue_at(lib: Any, conn: Any) -> Any:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    if lib is rq:
        q = rq.Queue(QUEUE, connection=conn)
        return q.enqueue_at(when, typed_tasks.resize, 'a.png', 1, job_id='t1', at_front=True, ttl=50)
    opts = typed_tasks.resize.options(enqueue_at=when, job_id='t1', at_front=True, ttl=50)
    return await typed(conn, lambda: opts.delay('a.png', 1))


@case
async def enqueue_in(lib: Any, conn: Any) -> Any:
    if lib is rq:
        q = rq.Queue(QUEUE, connection=conn)
        return q.enqueue_in(timedelta(minutes=5), typed_tasks.add, 1, 2, job_id='t1', result_ttl=600)
    opts = typed_tasks.add.options(enqueue_in=timedelta(minutes=5), job_id='t1')
    return await typed(conn, lambda: opts.delay(1, 2))


@case
async def enqueue_typed(lib: Any, conn: Any) -> Any:
    """``Queue.enqueue`` with a typed task is rq's enqueue of the function."""
    return await a(lib.Queue(QUEUE, connection=conn).enqueue(typed_tasks.resize, 'a.png', 3, job_id='t1'))


@pytest.mark.parametrize('name', sorted(CASES))
async def test_same_state(name: str, rq_conn: Any, aconn: Any, aiorq_sync: Any) -> None:
    await compare(CASES[name], rq_conn, aconn, aiorq_sync)
