"""The throughput history: the pure builder, the worker's recorder (counts in memory, one MULTI
per flush, counts kept when a flush fails), and the dashboard reading it back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from redis_server import free_port
from webkit import client

import aiorq
from aiorq.protocol import browse, stats
from aiorq_worker.throughput import ThroughputRecorder

NOW = 1_800_000_000.0  # minute 30_000_000
MINUTE = 30_000_000


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


def test_builder_is_pure_and_bounded() -> None:
    sink = Recording()
    counts = {(MINUTE + 1, 'q', 'failed'): 2, (MINUTE, 'q', 'finished'): 5, (MINUTE, 'a:b', 'finished'): 1}
    stats.buffer_counts(sink, {**counts, (MINUTE, 'x', 'failed'): 0})
    key0, key1 = stats.KEY_PREFIX + str(MINUTE), stats.KEY_PREFIX + str(MINUTE + 1)
    assert sink.calls == [
        ('hincrby', key0, 'finished:a:b', 1),
        ('hincrby', key0, 'finished:q', 5),
        ('hincrby', key1, 'failed:q', 2),
        ('expire', key0, stats.TTL),
        ('expire', key1, stats.TTL),
    ]
    assert key0 == f'rq:aiorq:throughput:{MINUTE}'  # under rq's prefix, in a part rq never uses
    with pytest.raises(ValueError):
        stats.field_name('started', 'q')


async def test_recorder_counts_and_flushes(conn: Redis, sync_conn: redis.Redis) -> None:
    clock = [NOW]
    recorder = ThroughputRecorder(conn, clock=lambda: clock[0])
    for _ in range(3):
        recorder.job_ended('q', 'finished')
    recorder.job_ended('q', 'failed')
    clock[0] += 60
    recorder.job_ended('other', 'finished')
    with pytest.raises(ValueError):
        recorder.job_ended('q', 'stopped')
    assert await recorder.flush() == 5
    assert await recorder.flush() == 0
    assert sync_conn.hgetall(f'rq:aiorq:throughput:{MINUTE}') == {b'finished:q': b'3', b'failed:q': b'1'}
    assert sync_conn.hgetall(f'rq:aiorq:throughput:{MINUTE + 1}') == {b'finished:other': b'1'}
    assert 7000 < sync_conn.ttl(f'rq:aiorq:throughput:{MINUTE}') <= stats.TTL

    ov = await browse.overview(conn, NOW + 60)
    assert ov.throughput.series['q']['finished'][-2:] == [3, 0]
    assert ov.throughput.series['q']['failed'][-2:] == [1, 0]
    assert ov.throughput.series['other']['finished'][-1] == 1
    assert ov.throughput.totals('finished')[-2:] == [3, 1]


async def test_failed_flush_keeps_counts(conn: Redis, sync_conn: redis.Redis) -> None:
    """Redis unreachable: the counts stay pending (the too old ones go) and a later flush writes them."""
    clock = [NOW]
    dead = aiorq.from_url(f'redis://127.0.0.1:{free_port()}/0')
    recorder = ThroughputRecorder(dead, clock=lambda: clock[0])
    recorder.job_ended('q', 'finished')
    clock[0] += stats.TTL + 120
    recorder.job_ended('q', 'failed')
    with pytest.raises(redis.exceptions.ConnectionError):
        await recorder.flush()
    await dead.aclose()
    assert dict(recorder.pending) == {(stats.minute_of(clock[0]), 'q', 'failed'): 1}
    recorder.connection = conn
    assert await recorder.flush() == 1
    assert sync_conn.hgetall(f'rq:aiorq:throughput:{stats.minute_of(clock[0])}') == {b'failed:q': b'1'}


async def test_run_flushes_until_stopped(conn: Redis, sync_conn: redis.Redis) -> None:
    recorder = ThroughputRecorder(conn, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.ensure_future(recorder.run(stop))
    recorder.job_ended('q', 'finished')
    minute = stats.minute_of(time.time())
    key = stats.KEY_PREFIX + str(minute)
    deadline = asyncio.get_running_loop().time() + 5
    while not sync_conn.hexists(key, 'finished:q') and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert sync_conn.hget(key, 'finished:q') == b'1'
    recorder.job_ended('q', 'finished')
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not recorder.pending
    # The second count lands in the same minute or the next one.
    written = [sync_conn.hget(stats.KEY_PREFIX + str(m), 'finished:q') for m in (minute, minute + 1)]
    assert sum(int(n or 0) for n in written) == 2


async def test_a_count_made_while_the_last_flush_is_sent_is_written(conn: Redis, sync_conn: redis.Redis) -> None:
    """Stop set while a flush is in flight, with a job counted meanwhile: one more flush writes it
    (the worker's last jobs end just before its clocks stop)."""

    class Racing(ThroughputRecorder):
        async def flush(self) -> int:
            n = await super().flush()
            if not stop.is_set():
                self.job_ended('q', 'failed')  # counted while the flush was sent
                stop.set()
            return n

    stop = asyncio.Event()
    recorder = Racing(conn, interval=0.05, clock=lambda: NOW)
    recorder.job_ended('q', 'finished')
    await asyncio.wait_for(recorder.run(stop), 5)
    assert not recorder.pending
    assert sync_conn.hgetall(f'rq:aiorq:throughput:{MINUTE}') == {b'finished:q': b'1', b'failed:q': b'1'}


async def test_chart_without_history(conn: Redis, sync_conn: redis.Redis) -> None:
    """A stock rq fleet writes no history: the overview says so, and works."""
    async with client(conn) as c:
        home = await c.get('/')
        assert 'No history: aiorq workers record it (stock rq workers do not).' in home.text
        live = (await c.get('/api/live')).json()
        assert live['throughput']['series'] == {} and live['throughput']['minutes'] == 60


async def test_a_worker_records_what_ended(conn: Redis) -> None:
    """A real worker, in real time: the history counts its finished and failed jobs per queue
    (a job left to a retry counts once, when it has failed for good)."""
    from aiorq_worker import Worker

    q, other = aiorq.Queue('tp', connection=conn), aiorq.Queue('tp-other', connection=conn)
    for n in range(3):
        await q.enqueue('web_tasks.noop', n)
    await q.enqueue('web_tasks.fail', 'one')
    await q.enqueue('web_tasks.fail', 'two', retry=aiorq.Retry(max=1))
    await other.enqueue('web_tasks.noop', 7)
    await Worker([q, other], connection=conn, name='tp-worker').work(burst=True)
    ov = await browse.overview(conn, time.time())
    # The jobs ran within the last two minutes (one minute boundary may fall between them).
    assert sum(ov.throughput.series['tp']['finished'][-2:]) == 3
    assert sum(ov.throughput.series['tp']['failed'][-2:]) == 2
    assert sum(ov.throughput.series['tp-other']['finished'][-2:]) == 1
    assert sum(ov.throughput.series['tp-other']['failed']) == 0
