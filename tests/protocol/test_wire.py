"""Script calls sharing round trips (``aiorq.protocol.wire``): concurrent enqueues go out
together, each gets its own reply, and a lost script, an error reply or a dropped connection
are handled per call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import rq
import tasks
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

import aiorq
from aiorq.protocol import wire


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records how many calls each write carried (the sender itself runs unchanged)."""
    sizes: list[int] = []
    original = wire._Sender._send

    async def counting(self: Any, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await original(self, batch)

    monkeypatch.setattr(wire._Sender, '_send', counting)
    return sizes


async def test_concurrent_enqueues_share_writes(conn: Redis, sync_conn: redis.Redis, batch_sizes: list[int]) -> None:
    q = aiorq.Queue('warm-up', connection=conn)
    await q.enqueue(tasks.add, 0, 0)  # the server knows the script from here on
    batch_sizes.clear()
    q = aiorq.Queue('q', connection=conn)
    jobs = await asyncio.gather(*[q.enqueue(tasks.add, i, i) for i in range(300)])
    assert sum(batch_sizes) == 300
    assert max(batch_sizes) > 1, batch_sizes  # later callers rode along in shared writes
    assert len(batch_sizes) < 300
    ids = [j.id for j in jobs]
    queued = [i.decode() for i in sync_conn.lrange('rq:queue:q', 0, -1)]
    assert sorted(queued) == sorted(ids) and len(set(queued)) == 300
    for i, job in enumerate(jobs):
        back = rq.job.Job.fetch(job.id, connection=sync_conn)
        assert back.args == (i, i)
        assert back.get_status() == rq.job.JobStatus.QUEUED
        assert back.origin == 'q'


async def test_forgotten_script_is_loaded_again(conn: Redis, sync_conn: redis.Redis) -> None:
    q = aiorq.Queue('q', connection=conn)
    await q.enqueue(tasks.add, 1, 1)
    sync_conn.script_flush()
    job = await q.enqueue(tasks.add, 2, 2)  # alone
    sync_conn.script_flush()
    many = await asyncio.gather(*[q.enqueue(tasks.add, i, 0) for i in range(20)])  # together
    assert sync_conn.llen('rq:queue:q') == 22
    assert rq.job.Job.fetch(job.id, connection=sync_conn).args == (2, 2)
    assert [rq.job.Job.fetch(j.id, connection=sync_conn).args for j in many] == [(i, 0) for i in range(20)]


async def test_an_error_reply_stays_with_its_call(conn: Redis, sync_conn: redis.Redis) -> None:
    sync_conn.set('rq:queue:broken', 'not a list')
    good = aiorq.Queue('good', connection=conn)
    broken = aiorq.Queue('broken', connection=conn)
    calls = [good.enqueue(tasks.add, i, 0) if i % 2 else broken.enqueue(tasks.add, i, 0) for i in range(20)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 2:
            assert isinstance(result, aiorq.Job), result
        else:
            assert isinstance(result, ResponseError) and 'WRONGTYPE' in str(result), result
    assert sync_conn.llen('rq:queue:good') == 10


async def test_a_dropped_connection_fails_only_the_calls_it_carried(conn: Redis, sync_conn: redis.Redis) -> None:
    q = aiorq.Queue('q', connection=conn)
    await asyncio.gather(*[q.enqueue(tasks.add, i, 0) for i in range(5)])
    sync_conn.client_kill_filter(_type='normal', skipme=True)
    outcomes = await asyncio.gather(*[q.enqueue(tasks.add, i, 1) for i in range(5)], return_exceptions=True)
    assert all(isinstance(o, (aiorq.Job, RedisConnectionError)) for o in outcomes), outcomes
    after = await asyncio.gather(*[q.enqueue(tasks.add, i, 2) for i in range(5)])
    written = 5 + sum(isinstance(o, aiorq.Job) for o in outcomes) + len(after)
    assert sync_conn.llen('rq:queue:q') == written
    for job in after:
        assert rq.job.Job.fetch(job.id, connection=sync_conn).get_status() == rq.job.JobStatus.QUEUED


def test_pack_matches_redis_py_encoding() -> None:
    from redis.asyncio.connection import Connection

    args = ('EVALSHA', 'abc', 2, 'k1', b'\x00\xff', 1.5, -3, 'é', 0.1 + 0.2, 2**70, 1e22)
    packed = b''.join(Connection().pack_command(*args))
    assert wire.pack(args, 'utf-8', 'strict') == packed  # hiredis's packer
    assert wire.pack(args, 'utf-8', 'surrogateescape') == packed  # aiorq's own
    latin = b''.join(Connection(encoding='latin-1').pack_command(*args))
    assert wire.pack(args, 'latin-1', 'strict') == latin
    for bad in (None, True, object()):
        with pytest.raises(TypeError):
            wire.pack(('SET', 'k', bad), 'utf-8', 'strict')
