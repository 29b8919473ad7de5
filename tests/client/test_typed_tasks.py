"""Typed tasks on the client side: the decorated function itself, ``options`` objects, and
``job.wait()``'s own behaviour (timeout, how it waits). Every final state, with both kinds of
worker, is in tests/fleet/test_typed_wait.py; the types in tests/typecheck/."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import typed_tasks
from redis.asyncio import Redis
from rq.exceptions import NoSuchJobError

import aiorq
from aiorq import JobStatus, Queue
from aiorq.results import _last_exception
from aiorq_worker import Worker

QUEUE = typed_tasks.QUEUE


@pytest.fixture
def current(conn: Redis) -> Iterator[Redis]:
    aiorq.push_connection(conn)
    yield conn
    assert aiorq.pop_connection() is conn


async def test_the_decorated_function_is_itself() -> None:
    resize = typed_tasks.resize
    assert await resize('a.png', width=3) == b'a.png@3'
    assert typed_tasks.add(1, b=2) == 3
    assert inspect.iscoroutinefunction(resize) and not inspect.iscoroutinefunction(typed_tasks.add)
    assert (resize.__name__, resize.__qualname__, resize.__doc__) == (
        'resize',
        'resize',
        'Pretend to resize the image at ``path``.',
    )
    assert list(inspect.signature(resize).parameters) == ['path', 'width']
    assert inspect.signature(resize.delay) == inspect.signature(resize)
    assert resize.delay.__wrapped__ is resize  # type: ignore[attr-defined]


async def test_delay_and_options(current: Redis) -> None:
    job = await typed_tasks.resize.delay('a.png', 640)
    assert (job.func_name, job.args, job.kwargs, job.origin) == ('typed_tasks.resize', ('a.png', 640), {}, QUEUE)
    # The decorator's own options, and rq's delay taking job_id out of the keywords.
    added = await typed_tasks.add.delay(1, b=2, job_id='mine')  # type: ignore[call-arg]
    assert (added.id, added.kwargs, added.result_ttl) == ('mine', {'b': 2}, 600)
    # An options object passes every keyword to the function, and overrides the decorator.
    opts = typed_tasks.add.options(job_timeout=60, result_ttl=5, meta={'who': 'me'}, description='sum')
    first, second = await opts.delay(1, b=2), await opts.delay(3)
    assert first.id != second.id
    for j in (first, second):
        assert (j.timeout, j.result_ttl, j.meta, j.description) == (60, 5, {'who': 'me'}, 'sum')
    assert (first.args, first.kwargs, second.args) == ((1,), {'b': 2}, (3,))
    # Deriving leaves the original as it was; neither can be changed.
    derived = opts.options(job_timeout=5, at_front=True)
    assert (await opts.delay(0)).timeout == 60
    front = await derived.delay(0)
    assert front.timeout == 5 and (await Queue(QUEUE, connection=current).job_ids)[0] == front.id
    with pytest.raises(AttributeError, match='immutable'):
        opts.delay = None  # type: ignore[method-assign, assignment]
    with pytest.raises(TypeError, match='job_timeot'):
        typed_tasks.add.options(job_timeot=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match='not both'):
        typed_tasks.add.options(enqueue_in=timedelta(1), enqueue_at=datetime.now(timezone.utc))


async def test_options_schedule_and_depend(current: Redis) -> None:
    parent = await typed_tasks.add.delay(1, 2)
    child = await typed_tasks.resize.options(depends_on=parent).delay('b.png', 1)
    assert await child.get_status() == JobStatus.DEFERRED
    later = await typed_tasks.resize.options(enqueue_in=timedelta(minutes=5)).delay('c.png', 2)
    when = datetime(2030, 1, 2, tzinfo=timezone.utc)
    at = await typed_tasks.resize.options(enqueue_at=when, job_id='at').delay('d.png', 3)
    q = Queue(QUEUE, connection=current)
    assert sorted(await q.scheduled_job_registry.get_job_ids()) == sorted([later.id, at.id])
    assert await q.scheduled_job_registry.get_scheduled_time(at) == when


async def test_wait_times_out_and_holds_no_connection(current: Redis) -> None:
    job = await typed_tasks.add.delay(1, 2)
    start = time.monotonic()
    with pytest.raises(asyncio.TimeoutError, match='still queued'):
        await job.wait(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 2
    assert not current.connection_pool._in_use_connections  # type: ignore[attr-defined]
    gone = await typed_tasks.add.delay(1)
    await gone.delete()
    with pytest.raises(NoSuchJobError):
        await gone.wait(timeout=1)


async def test_wait_blocks_on_the_result_stream(current: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """One blocking read while the job waits for a worker, not a read per poll (the status
    re-check, for cancels, is moved out of the way so the count is exact)."""
    monkeypatch.setattr(importlib.import_module('aiorq.job'), 'WAIT_RECHECK_INTERVAL', 30.0)
    job = await typed_tasks.resize.delay('a.png', 2)
    before = (await current.info('commandstats')).get('cmdstat_xread', {}).get('calls', 0)
    waiter = asyncio.ensure_future(job.wait(timeout=30))
    await asyncio.sleep(1)
    assert not waiter.done()
    await Worker(QUEUE, connection=current, name='typed-stream').work(burst=True)
    assert await waiter == b'a.png@2'
    after = (await current.info('commandstats'))['cmdstat_xread']['calls']
    assert after - before == 1
    assert not current.connection_pool._in_use_connections  # type: ignore[attr-defined]


def test_exception_text_parsing() -> None:
    def formatted(e: BaseException) -> str:
        import traceback

        return ''.join(traceback.format_exception(e))

    try:
        try:
            raise KeyError('inner')
        except KeyError as inner:
            raise typed_tasks.OopsError('line one\nline two') from inner
    except typed_tasks.OopsError as e:
        chained = formatted(e)
    assert _last_exception(chained) == ('typed_tasks.OopsError', 'line one\nline two')
    try:
        raise ValueError
    except ValueError as e:
        bare = formatted(e)
    assert _last_exception(bare) == ('ValueError', '')
    assert _last_exception('Job stopped by user, work-horse terminated.') == (
        None,
        'Job stopped by user, work-horse terminated.',
    )
