"""Typed uses of aiorq, for tests/typecheck/test_typecheck.py: mypy and pyright check this file,
nothing runs it (it is no test module, and the main mypy run covers aiorq and aiorq_worker only).

Each positive case is an ``assert_type``. Each negative case carries the ignore comment of both
checkers with the exact error code, and both are told to report an ignore that is not needed (and
pyright to honour only its own comments): a case that stops being an error fails the test.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis
from typing_extensions import assert_type

import aiorq
from aiorq import AsyncTask, Job, Result, Task, TaskOptions

redis = Redis()
queue = aiorq.Queue('default', connection=redis)


@aiorq.job(queue)
async def resize(path: str, width: int) -> bytes:
    """Resize an image."""
    return path.encode() * width


@aiorq.job('default', timeout=30, result_ttl=60)
def add(a: int, b: int = 0) -> int:
    return a + b


@aiorq.job(queue)
async def nothing() -> None:
    pass


async def decorated() -> None:
    # (A ParamSpec keeps the parameters' names, which assert_type would compare: assignments here.)
    async_task: AsyncTask[[str, int], bytes] = resize
    task: Task[[int, int], int] = add
    del async_task, task
    # Called directly, each is the function it was.
    coroutine = assert_type(resize('a.png', 2), Coroutine[Any, Any, bytes])
    coroutine.close()
    assert_type(await resize('a.png', width=2), bytes)
    assert_type(add(1, 2), int)
    assert_type(resize.__name__, str)


async def the_issue() -> None:
    job = await resize.delay('a.png', width=640)
    assert_type(job, Job[bytes])
    data = await job.wait(timeout=30)
    assert_type(data, bytes)
    job2 = await resize.options(job_timeout=60, depends_on=job).delay('b.png', 320)
    assert_type(job2, Job[bytes])
    job3 = await queue.enqueue(resize, 'c.png', 100)
    assert_type(job3, Job[bytes])
    result = await job3.latest_result(timeout=10)
    assert_type(result, Result[bytes] | None)
    if result is not None:
        assert_type(result.return_value, bytes | None)
    value = await job3.result
    assert_type(value, bytes | None)


async def more_positive() -> None:
    assert_type(await add.delay(1, 2), Job[int])
    assert_type(await add.enqueue(1), Job[int])
    assert_type(await add.options(job_id='x').delay(1, b=2), Job[int])
    assert_type(await nothing.delay(), Job[None])
    assert_type(await (await nothing.delay()).wait(), None)
    assert_type(await queue.enqueue(add, 1, 2, job_timeout=5), Job[int])
    assert_type(await queue.enqueue('mylib.add', 1, 2), Job[Any])
    assert_type(await Job.fetch('id', connection=redis), Job[Any])
    assert_type(await queue.fetch_job('id'), Job[Any] | None)
    job = await add.delay(1, 2)
    assert_type(await job.return_value(), int | None)
    assert_type(await job.results(), list[Result[int]])
    # An options object is reusable, and derives others.
    slow = resize.options(job_timeout='1h', retry=aiorq.Retry(max=3), meta={'w': 1})
    assert_type(await slow.delay('a.png', 1), Job[bytes])
    assert_type(await slow.delay('b.png', width=2), Job[bytes])
    later = slow.options(enqueue_in=timedelta(minutes=5), at_front=True)
    assert_type(await later.delay('a.png', 1), Job[bytes])
    as_declared: TaskOptions[[str, int], bytes] = later
    del as_declared
    at = resize.options(enqueue_at=datetime(2030, 1, 1, tzinfo=timezone.utc), unique=True, job_id='r1')
    assert_type(await at.delay('a.png', 1), Job[bytes])
    every: TaskOptions[[str, int], bytes] = resize.options(
        result_ttl=10,
        ttl=20,
        failure_ttl=30,
        description='d',
        depends_on=[job, 'other-id', aiorq.Dependency(job, allow_failure=True)],
        repeat=aiorq.Repeat(times=2),
        on_success=aiorq.Callback(add),
        on_failure=add,
        on_stopped=None,
        rate_limit=aiorq.RateLimit(key='k', concurrency=2),
        webhooks=[],
        pipeline=redis.pipeline(),
    )
    del every
    # Job is covariant: a Job[bytes] is a Job[object].
    anything: Job[object] = job
    del anything
    try:
        await job.wait()
    except aiorq.JobStopped as e:
        assert_type(e, aiorq.JobStopped)
    except aiorq.JobFailed as e:
        assert_type(e.exc_type, str | None)
        assert_type(e.exc_message, str)
        assert_type(e.traceback, str)
        assert_type(e.result, Result[Any] | None)


async def negative() -> None:
    job = await resize.delay('a.png', 640)
    # Wrong argument type, to delay, to options(...).delay and to the function itself.
    await resize.delay('a.png', '640')  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await resize.options(job_timeout=60).delay(640, 480)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    add('1', 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # A missing argument; one too many; an unknown keyword.
    await resize.delay('a.png')  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await add.delay(1, 2, 3)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await resize.delay('a.png', hieght=3)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    # An unknown option, and an option of the wrong type.
    resize.options(job_timeot=60)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    resize.options(job_timeout=[60])  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    resize.options(depends_on=42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # The awaited result used as the wrong type.
    text: str = await job.wait()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    number: int | None = await job.result  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    job3 = await queue.enqueue(resize, 'c.png', 100)
    other: Job[str] = job3  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    # The task's own type: other parameters, another result.
    swapped: AsyncTask[[int, str], bytes] = resize  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    as_text: AsyncTask[[str, int], str] = resize  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    wrong_options: TaskOptions[[str], bytes] = resize.options()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    # Options objects are immutable.
    resize.options().delay = None  # type: ignore[method-assign, assignment]  # pyright: ignore[reportAttributeAccessIssue]
    del text, number, other, swapped, as_text, wrong_options
