"""The producer's client when Redis has closed its idle connections (``CLIENT KILL``, a proxy's
idle timeout, a restarted server): the next call runs on a fresh connection. A call whose reply
was lost is not sent again: the enqueue script pushes its job id, so a resend would queue the
job twice (``aiorq.connections.CheckedConnectionPool``; docs/deployment.md).

The calls after a kill are made at once, with no ``await`` in between, as a producer that wakes
up on a request does: the event loop has not yet read the close from the socket."""

from __future__ import annotations

import asyncio
import signal
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import tasks
from faultkit import LossyProxy, Server
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import aiorq
from aiorq import Job, JobStatus, Queue
from aiorq.protocol import scripts

CLIENTS: dict[str, Callable[[str], Redis]] = {'aiorq.from_url': aiorq.from_url, 'Redis.from_url': Redis.from_url}


def queue_ids(server: Server, name: str = 'q') -> list[str]:
    with server.client() as admin:
        return [x.decode() for x in admin.lrange(f'rq:queue:{name}', 0, -1)]


def kill_clients(server: Server) -> int:
    """Close every client connection but the admin's own; returns how many were closed."""
    with server.client() as admin:
        return int(admin.client_kill_filter(_type='normal', skipme=True))


async def test_from_url_warns_nothing(redis_url: str) -> None:
    """redis-py 8.2 warns when an asyncio client is handed the blocking ``redis.retry.Retry``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        client = aiorq.from_url(redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    assert [f'{w.category.__name__}: {w.message}' for w in caught] == []


@pytest.mark.parametrize('make', CLIENTS.values(), ids=CLIENTS.keys())
async def test_an_enqueue_after_its_connection_was_killed_succeeds(
    fault_redis: Callable[..., Server], make: Callable[[str], Redis]
) -> None:
    """The enqueue script goes out on a connection of aiorq's choosing, so even a client made
    with plain ``Redis.from_url`` gets a fresh one."""
    server = fault_redis()
    client = make(server.url())
    try:
        q = Queue('q', connection=client)
        ids = [(await q.enqueue(tasks.add, 1, 2)).id]
        for _ in range(3):
            assert kill_clients(server) >= 1
            ids.append((await q.enqueue(tasks.add, 1, 2)).id)
        assert queue_ids(server) == ids
    finally:
        await client.aclose()


async def test_every_kind_of_call_after_killed_connections_succeeds(fault_redis: Callable[..., Server]) -> None:
    """With ``aiorq.from_url`` every command gets the check: reads, transactions, scripts."""
    server = fault_redis()
    client = aiorq.from_url(server.url())
    try:
        q = Queue('q', connection=client)
        job = await q.enqueue(tasks.add, 1, 2)
        # Several idle connections in the pool, all of which the kills below close.
        await asyncio.gather(*(Job.fetch(job.id, connection=client) for _ in range(4)))
        assert kill_clients(server) >= 1
        assert await q.get_job_ids() == [job.id]  # a read
        assert kill_clients(server) >= 1
        fetched = await Job.fetch(job.id, connection=client)  # a read through a pipeline
        assert await fetched.get_status() == JobStatus.QUEUED
        assert kill_clients(server) >= 1
        dependent = await q.enqueue(tasks.add, 3, 4, depends_on=job)  # WATCH/MULTI/EXEC
        assert kill_clients(server) >= 1
        more = await q.enqueue_many([Queue.prepare_data(tasks.add, (5, 6)) for _ in range(2)])  # a script
        assert queue_ids(server) == [job.id, *[j.id for j in more]]
        assert await dependent.get_status() == JobStatus.DEFERRED
    finally:
        await client.aclose()


@pytest.mark.parametrize('make', CLIENTS.values(), ids=CLIENTS.keys())
async def test_the_first_enqueue_after_a_redis_restart_succeeds(
    fault_redis: Callable[..., Server], make: Callable[[str], Redis]
) -> None:
    """The restarted server has neither the old connections nor the enqueue script."""
    server = fault_redis()
    client = make(server.url())
    try:
        q = Queue('q', connection=client)
        await q.enqueue(tasks.add, 1, 2)
        server.kill(signal.SIGKILL)
        server.start()  # no persistence: empty
        job = await q.enqueue(tasks.add, 1, 2)
        assert queue_ids(server) == [job.id]
    finally:
        await client.aclose()


@pytest.mark.parametrize('make', CLIENTS.values(), ids=CLIENTS.keys())
@pytest.mark.parametrize('path', ['script', 'transaction'])
async def test_an_enqueue_whose_reply_is_lost_is_not_sent_again(
    fault_redis: Callable[..., Server],
    lossy_proxy: Callable[[int], LossyProxy],
    make: Callable[[str], Redis],
    path: str,
) -> None:
    """Redis ran the enqueue but the connection broke before its reply came back. The client
    cannot know whether it ran, so the call raises and the job is in the queue once; the next
    enqueue goes out on a fresh connection. ``script``: a plain job, aiorq's one-call enqueue;
    ``transaction``: a job whose dependency has finished, rq's ``MULTI``/``EXEC`` (resent by a
    client with retries)."""
    server = fault_redis()
    proxy = lossy_proxy(server.port)
    client = make(proxy.url())
    try:
        q = Queue('q', connection=client)
        warm = await q.enqueue(tasks.add, 1, 2)  # loads the script: the armed EVALSHA runs it
        options: dict[str, Any] = {}
        if path == 'script':
            proxy.arm(scripts.sha(scripts.ENQUEUE_SCRIPT).encode())
        else:
            with server.client() as admin:
                admin.hset(f'rq:job:{warm.id}', 'status', 'finished')
            options['depends_on'] = warm
            proxy.arm(b'RPUSH')  # the transaction's push, not the dependency checks before it
        with pytest.raises(RedisConnectionError):
            await q.enqueue(tasks.add, 3, 4, job_id='lost-reply', **options)
        assert proxy.fired == 1
        assert queue_ids(server) == [warm.id, 'lost-reply']
        after = await q.enqueue(tasks.add, 5, 6)
        assert queue_ids(server) == [warm.id, 'lost-reply', after.id]
    finally:
        await client.aclose()
