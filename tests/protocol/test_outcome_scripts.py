"""The outcome writes, tested directly against Redis (as arq's tests/test_lua.py tests its
scripts): for every outcome, an owned execution commits; a superseded one writes nothing of the
outcome; an attempt repeated after a lost reply is recognised as committed and writes nothing
twice; and in a combined call, a section that errors leaves the others' results intact."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import rq
import tasks
from redis.asyncio import Redis
from rq.job import JobStatus
from rq.utils import now
from state import snapshot

import aiorq
from aiorq.protocol import dequeue, finish, keys
from aiorq.protocol.batch import Batch, Combiner, SectionError, run_batches

WORKER = 'w1'
Finish = Callable[[Redis, dequeue.Claimed], Awaitable[bool]]


async def started(conn: Redis, **options: Any) -> dequeue.Claimed:
    """Enqueue one job with ``options`` and start it as the worker does (one execution)."""
    q = aiorq.Queue('q', connection=conn)
    func = options.pop('func', tasks.add)
    args = options.pop('args', (1, 2))
    await q.enqueue(func, *args, **options)
    popped = await dequeue.pop(conn, ['q'], 1, True)
    executions, broken = await dequeue.start_executions(conn, WORKER, popped, interval=30, single=True)
    assert not broken and len(executions) == 1
    ex = executions[0]
    ex.ended_at = ex.last_heartbeat = now()  # what the runner sets before recording the outcome
    return ex


async def success(conn: Redis, ex: dequeue.Claimed) -> bool:
    return await finish.finish_success(conn, WORKER, ex, 3, 500)


async def failure(conn: Redis, ex: dequeue.Claimed) -> bool:
    return await finish.finish_failure(conn, WORKER, None, ex, 'Traceback: boom')


async def stop(conn: Redis, ex: dequeue.Claimed) -> bool:
    ex.ended_at = ex.last_heartbeat = None
    return await finish.finish_failure(conn, WORKER, None, ex, 'stopped', stopped=True)


async def returned_retry(conn: Redis, ex: dequeue.Claimed) -> bool:
    committed, _ = await finish.finish_returned_retry(conn, WORKER, ex, rq.Retry(max=2, interval=5))
    return committed


# outcome name -> (enqueue options, finish, expected status after the owned commit)
OUTCOMES: dict[str, tuple[dict[str, Any], Finish, JobStatus]] = {
    'success': ({}, success, JobStatus.FINISHED),
    'success, result_ttl=0 (deletes)': ({'result_ttl': 0}, success, JobStatus.FINISHED),
    'repeat now': ({'repeat': rq.Repeat(times=1)}, success, JobStatus.QUEUED),
    'repeat later': ({'repeat': rq.Repeat(times=1, interval=30)}, success, JobStatus.SCHEDULED),
    'failure': ({}, failure, JobStatus.FAILED),
    'failure, failure_ttl=0 (deletes)': ({'failure_ttl': 0}, failure, JobStatus.FAILED),
    'retry now': ({'retry': rq.Retry(max=2)}, failure, JobStatus.QUEUED),
    'retry later': ({'retry': rq.Retry(max=2, interval=30)}, failure, JobStatus.SCHEDULED),
    'stop': ({'retry': rq.Retry(max=2)}, stop, JobStatus.STOPPED),
    'returned Retry': ({}, returned_retry, JobStatus.SCHEDULED),
}


# Outcomes written on the lean path (no rq job built); the others take rq's path (lean's rule:
# retries, repeats; a result or failure TTL of 0; a returned Retry).
LEAN = {'success', 'failure'}


def outcome_view(sync: redis.Redis) -> dict[Any, Any]:
    """The database minus the execution's own records (which a superseded finish removes)."""
    return {
        k: v
        for k, v in snapshot(sync).items()
        if not k.startswith((b'rq:execution:', b'rq:executions:', b'rq:worker:'))
    }


@pytest.mark.parametrize('name', list(OUTCOMES))
async def test_owned_commits(name: str, conn: Redis, sync_conn: redis.Redis) -> None:
    options, outcome, status = OUTCOMES[name]
    ex = await started(conn, **options)
    assert await outcome(conn, ex) is True
    stored = sync_conn.hget(keys.job(ex.job_id), 'status')
    if stored is not None:
        assert stored.decode() == status.value
    else:
        assert name.endswith('(deletes)')
    # rq's path built rq's job, which says what was committed; the lean path built none.
    assert ex.rq_job_built is (name not in LEAN)
    if name not in LEAN:
        assert ex.job.get_status(refresh=False) == status
    assert sync_conn.zcard('rq:wip:q') == 0
    assert sync_conn.scard(keys.worker_executions(WORKER)) == 0


@pytest.mark.parametrize('name', list(OUTCOMES))
async def test_superseded_writes_nothing(name: str, conn: Redis, sync_conn: redis.Redis) -> None:
    options, outcome, _ = OUTCOMES[name]
    ex = await started(conn, **options)
    # Someone else took the execution away (maintenance declared it abandoned, a cancel…).
    sync_conn.zrem('rq:wip:q', ex.member)
    before = outcome_view(sync_conn)
    retries_left = ex.job.retries_left
    assert await outcome(conn, ex) is False
    assert outcome_view(sync_conn) == before
    assert sync_conn.hget(keys.job(ex.job_id), 'status') == b'started'
    # The job object is untouched: a later attempt would build the very same write.
    assert ex.job.retries_left == retries_left
    assert ex.job.get_status(refresh=False) == JobStatus.STARTED


@pytest.mark.parametrize('name', list(OUTCOMES))
async def test_repeated_after_a_lost_reply(name: str, conn: Redis, sync_conn: redis.Redis) -> None:
    """The first attempt committed but its reply never came (an outage): the runner builds the
    outcome again from its unchanged job and retries. It must be told "committed", and nothing
    may be written twice (counters, Result entries, retries left)."""
    options, outcome, status = OUTCOMES[name]
    ex = await started(conn, **options)
    original = finish.plan(ex.job)
    assert await outcome(conn, ex) is True
    after_first = snapshot(sync_conn)
    finish.adopt(ex.job, original)  # as if the reply was lost: the job object never learned of it
    assert await outcome(conn, ex) is True
    assert snapshot(sync_conn) == after_first
    # The lean path never changes rq's job (built here by the test); rq's path adopts the outcome.
    assert ex.job.get_status(refresh=False) == (JobStatus.STARTED if name in LEAN else status)


async def test_retries_are_spent_once(conn: Redis, sync_conn: redis.Redis) -> None:
    ex = await started(conn, retry=rq.Retry(max=3))
    for _ in range(3):  # attempts that never reached Redis build the same write each time
        finish.plan(ex.job)
    assert await failure(conn, ex) is True
    assert int(sync_conn.hget(keys.job(ex.job_id), 'retries_left') or 0) == 2
    assert ex.job.retries_left == 2


async def test_combined_call_with_an_erroring_section(conn: Redis, sync_conn: redis.Redis) -> None:
    """Two finishes in one script call; the second errors half-way (its Result stream key holds a
    string). The first is committed once and reported so; the second reports where it stopped."""
    first = await started(conn)
    second = await started(conn)
    sync_conn.set(keys.results(second.job_id), 'not a stream')
    sections = []
    for ex in (first, second):
        batch = Batch()
        batch.guard_member(keys.registry('started', ex.queue), ex.member)
        batch.hincrby(keys.worker(WORKER), 'successful_job_count', 1)
        batch.hset(keys.job(ex.job_id), 'status', 'finished')
        batch.xadd(keys.results(ex.job_id), {'type': 1, 'worker_name': WORKER}, maxlen=10)
        batch.zrem(keys.registry('started', ex.queue), ex.member)
        sections.append(batch)
    results = await run_batches(conn, sections)
    assert results[0] == 0
    assert isinstance(results[1], SectionError) and results[1].partial and results[1].command == 3
    assert 'WRONGTYPE' in str(results[1])
    assert int(sync_conn.hget(keys.worker(WORKER), 'successful_job_count') or 0) == 2
    assert sync_conn.xlen(keys.results(first.job_id)) == 1
    # The second section stopped before its ZREM: its execution still owns the job.
    assert sync_conn.zscore('rq:wip:q', second.member) is not None
    assert sync_conn.zscore('rq:wip:q', first.member) is None


async def test_combiner_reports_each_section(conn: Redis, sync_conn: redis.Redis) -> None:
    """Through the Combiner: the erroring section raises for its submitter only; the committed
    one is not re-run (its counter moved once)."""
    import asyncio

    exs = [await started(conn) for _ in range(3)]
    sync_conn.set(keys.results(exs[1].job_id), 'not a stream')
    combiner = Combiner(conn)
    calls = [finish.finish_success(conn, WORKER, ex, 3, 500, run=combiner.submit) for ex in exs]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], SectionError) and outcomes[1].partial
    assert int(sync_conn.hget(keys.worker(WORKER), 'successful_job_count') or 0) == 3
    for ex in (exs[0], exs[2]):
        assert sync_conn.xlen(keys.results(ex.job_id)) == 1
        assert sync_conn.hget(keys.job(ex.job_id), 'status') == b'finished'


async def test_out_of_memory_writes_nothing(conn: Redis, sync_conn: redis.Redis) -> None:
    """Redis refuses the first write of a script when over ``maxmemory``: the section reports an
    error at its first command (nothing written), which the runner retries later."""
    ex = await started(conn)
    before = snapshot(sync_conn)
    sync_conn.config_set('maxmemory-policy', 'noeviction')
    sync_conn.config_set('maxmemory', 1)
    try:
        with pytest.raises(SectionError) as refused:
            await success(conn, ex)
    finally:
        sync_conn.config_set('maxmemory', 0)
    assert not refused.value.partial and 'OOM' in str(refused.value)
    assert snapshot(sync_conn) == before
    assert await success(conn, ex) is True
    assert sync_conn.hget(keys.job(ex.job_id), 'status') == b'finished'


async def test_abandonment_is_not_written_over_a_late_owner(conn: Redis, sync_conn: redis.Redis) -> None:
    """Maintenance declares an execution abandoned (deadline passed), but its owner was only late
    and finishes while maintenance runs the failure callback: the owner's outcome stands."""
    from aiorq.protocol import registries

    ex = await started(conn)
    sync_conn.zadd('rq:wip:q', {ex.member: 1}, xx=True)  # the deadline passed (steered)
    seen = []

    async def owner_finishes_meanwhile(job: Any) -> None:
        seen.append(job.id)
        assert await success(conn, ex) is True

    processed = await registries.cleanup_started(conn, 'q', on_abandoned=owner_finishes_meanwhile)
    assert seen == [ex.job_id] and processed == []
    assert sync_conn.hget(keys.job(ex.job_id), 'status') == b'finished'
    assert sync_conn.zcard('rq:failed:q') == 0
    assert sync_conn.xlen(keys.results(ex.job_id)) == 1
    # Without a late owner, the same pass fails the job as rq does.
    other = await started(conn)
    sync_conn.zadd('rq:wip:q', {other.member: 1}, xx=True)
    assert [j.id for j in await registries.cleanup_started(conn, 'q')] == [other.job_id]
    assert sync_conn.hget(keys.job(other.job_id), 'status') == b'failed'
