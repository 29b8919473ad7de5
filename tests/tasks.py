"""Importable job functions for the tests (workers import them by name)."""

from __future__ import annotations

import asyncio


def add(a: int, b: int) -> int:
    return a + b


def summator(*args: int) -> int:
    return sum(args)


def fail(message: str = 'boom') -> None:
    raise ValueError(message)


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def on_success_cb(job: object, connection: object, result: object) -> None:
    pass


def on_failure_cb(job: object, connection: object, *exc_info: object) -> None:
    pass


def on_stopped_cb(job: object, connection: object) -> None:
    pass


async def async_callback(job: object, connection: object, result: object) -> None:
    pass


class Adder:
    def __init__(self, base: int) -> None:
        self.base = base

    def add(self, x: int) -> int:
        return self.base + x


async def introspect(n: int) -> dict[str, object]:
    """A coroutine job using aiorq inside: its own job, meta progress, a nested fetch."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    job.meta['progress'] = n
    await job.save_meta()
    again = await aiorq.Job.fetch(job.id)
    return {'id': job.id, 'origin': job.origin, 'meta': again.meta, 'status': (await again.get_status()).value}


def stock_progress(n: int) -> int:
    """Plain stock rq code: meta progress through rq.get_current_job()."""
    import rq

    job = rq.get_current_job()
    assert job is not None
    job.meta['progress'] = n
    job.save_meta()
    return n * 2


def current_rq_job() -> dict[str, object]:
    """Plain stock rq code reading its own job through ``rq.get_current_job()``."""
    import rq

    return _described(rq.get_current_job())


async def async_current_rq_job() -> dict[str, object]:
    """A coroutine reading its own job through rq's ``get_current_job()`` (stock rq supports it)."""
    import rq

    await asyncio.sleep(0)
    return _described(rq.get_current_job())


async def current_job_identity() -> list[bool]:
    """Whether each ``get_current_job()`` returns one object for the whole job."""
    import rq

    import aiorq

    return [rq.get_current_job() is rq.get_current_job(), aiorq.get_current_job() is aiorq.get_current_job()]


def _described(job: object) -> dict[str, object]:
    return {
        'class': f'{type(job).__module__}.{type(job).__qualname__}',
        'id': job.id,  # type: ignore[attr-defined]
        'meta': job.meta,  # type: ignore[attr-defined]
        'origin': job.origin,  # type: ignore[attr-defined]
        'func_name': job.func_name,  # type: ignore[attr-defined]
        'args': list(job.args),  # type: ignore[attr-defined]
    }


def returns_retry() -> object:
    import rq

    return rq.Retry(max=1)


def returns_none() -> None:
    return None


def record_success(job: object, connection: object, result: object) -> None:
    connection.sadd('callbacks', f'success:{job.id}:{result}')  # type: ignore[attr-defined]


def record_failure(job: object, connection: object, *exc_info: object) -> None:
    connection.sadd('callbacks', f'failure:{job.id}:{exc_info[0].__name__}')  # type: ignore[attr-defined,union-attr]


def sleep_for(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


async def async_sleep_for(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def unpicklable_result() -> object:
    import threading

    return threading.Lock()


# -- recording jobs for the fleet and fault tests: each run appends its job id to the list `ran` ---------


def _record_sync() -> None:
    import rq

    job = rq.get_current_job()
    assert job is not None
    job.connection.rpush('ran', job.id)


async def _record_async() -> None:
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    await job.connection.rpush('ran', job.id)


def record_add(a: int, b: int) -> int:
    """``add`` that records its run (plain function)."""
    _record_sync()
    return add(a, b)


async def record_async_add(a: int, b: int) -> int:
    """``async_add`` that records its run (coroutine)."""
    await _record_async()
    return await async_add(a, b)


async def record_sleep(ms: int) -> int:
    """A coroutine that records its run, then sleeps ``ms`` milliseconds."""
    await _record_async()
    await asyncio.sleep(ms / 1000)
    return ms


def record_fail(message: str = 'boom') -> None:
    """``fail`` that records its run first."""
    _record_sync()
    fail(message)


async def slow_from_redis() -> float:
    """Records its run, then sleeps for ``GET sleep_seconds`` seconds (30 when unset): a test can
    shorten the sleep of jobs already enqueued (their arguments cannot change)."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    await job.connection.rpush('ran', job.id)
    raw = await job.connection.get('sleep_seconds')
    seconds = 30.0 if raw is None else float(raw)
    await asyncio.sleep(seconds)
    return seconds


async def track_concurrency(seconds: float) -> int:
    """Counts how many of these run at once (key ``running``, peak in ``peak``)."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    conn = job.connection
    now_running = await conn.incr('running')
    await conn.eval(
        "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
        "redis.call('SET', KEYS[1], ARGV[1]) end",
        1,
        'peak',
        now_running,
    )
    await asyncio.sleep(seconds)
    await conn.decr('running')
    return int(now_running)


async def uses_worker_state() -> str:
    from aiorq_worker import get_worker_state

    return str(get_worker_state().greeting)


async def async_fail() -> None:
    await asyncio.sleep(0)
    raise KeyError('async boom')


async def async_noop() -> None:
    return None


async def progress_then_wait() -> str:
    """Publishes progress in meta, then waits until someone pushes to ``go``."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    job.meta['progress'] = 50
    await job.save_meta()
    await job.connection.blpop(['go'], timeout=20)
    job.meta['progress'] = 100
    await job.save_meta()
    return 'done'


async def raises_timeout_error() -> None:
    raise TimeoutError('my own timeout')


# -- fault tests: attempts counted outside Redis (a file), so an outage cannot hide one -------------


def _note_attempt(path: str) -> str:
    """Appends the current job's id to the file ``path`` (one line per attempt) and returns it."""
    import rq

    import aiorq

    job = aiorq.get_current_job() or rq.get_current_job()
    assert job is not None
    with open(path, 'a') as f:
        f.write(job.id + '\n')
    return job.id


async def attempt_then_record(path: str, ms: int) -> int:
    """Notes the attempt in a file, sleeps ``ms`` milliseconds, then records its run in Redis
    (``RPUSH ran``): a job in flight while Redis is away fails on that last call."""
    _note_attempt(path)
    await asyncio.sleep(ms / 1000)
    await _record_async()
    return ms


async def attempt_sleep(path: str, ms: int) -> int:
    """Notes the attempt in a file and sleeps ``ms`` milliseconds; writes nothing to Redis."""
    _note_attempt(path)
    await asyncio.sleep(ms / 1000)
    return ms


async def block_loop_on_signal(seconds: float, busy: bool = False) -> float:
    """A coroutine that blocks its event loop by mistake: waits for a push to ``block``, sets
    ``blocking``, then sleeps (``time.sleep``) or spins (``busy``) for ``seconds`` on the loop."""
    import time

    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    # Polls (a blocking BLPOP would outlast the client's socket timeout).
    while not await job.connection.lpop('block'):
        await asyncio.sleep(0.05)
    await job.connection.set('blocking', 1)
    if busy:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    else:
        time.sleep(seconds)
    return seconds


def fail_first_attempt() -> str:
    """Fails on its first attempt and succeeds on the next (counted in ``attempts:<id>``);
    records each run."""
    import rq

    job = rq.get_current_job()
    assert job is not None
    job.connection.rpush('ran', job.id)
    if job.connection.incr(f'attempts:{job.id}') == 1:
        raise ValueError('first attempt fails')
    return 'second time lucky'
