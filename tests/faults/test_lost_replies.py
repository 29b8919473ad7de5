"""Lost replies: Redis ran a write, but its reply never reached the worker (the server died or the
network broke right after it; with ``appendfsync always`` the write even survives a crash).

A proxy between the worker and Redis (``faultkit.LossyProxy``) makes this happen on demand: it
lets one request through and cuts the connection before the reply comes back. The worker cannot
tell whether the write happened, so it must ask again in a way that can neither apply it twice
nor leave what it did behind: a claimed job must run (not sit ``started`` with nobody running it
until maintenance declares it abandoned), an outcome must count once, and what follows a
committed outcome (the rate-limit slot release, a retry) must happen.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import rq
import tasks
from faultkit import LossyProxy, Server, aiorq_worker, wait_for
from processes import Processes
from rq.job import Job as RQJob
from rq.job import JobStatus

from aiorq.protocol import scripts
from aiorq.protocol.batch import GUARDED_BATCH_SCRIPT
from aiorq.protocol.dequeue import CLAIM_SCRIPT

QUEUE = 'lossy'


def start_worker(
    fault_redis: Callable[..., Server], lossy_proxy: Callable[[int], LossyProxy], processes: Processes
) -> tuple[Server, LossyProxy, rq.Queue]:
    """A worker talking to Redis through the proxy, with its scripts loaded (a warm-up job ran):
    an armed pattern then meets the ``EVALSHA`` that runs a script, not a ``NOSCRIPT`` probe."""
    server = fault_redis()
    proxy = lossy_proxy(server.port)
    conn = server.client()
    worker = processes.start('worker', aiorq_worker(proxy.url(), '--concurrency', '4', '--name', 'lossy', QUEUE))
    wait_for(lambda: conn.hget('rq:worker:lossy', 'state') == b'idle', 20, lambda: processes.log(worker))
    q = rq.Queue(QUEUE, connection=conn)
    warm = q.enqueue(tasks.record_add, 1, 1)
    wait_for(lambda: warm.get_status(refresh=True) == JobStatus.FINISHED, 20, lambda: processes.log(worker))
    return server, proxy, q


def test_a_lost_claim_reply_still_runs_the_claimed_jobs(
    fault_redis: Callable[..., Server], lossy_proxy: Callable[[int], LossyProxy], processes: Processes
) -> None:
    """The claim (pop and start in one script) is answered, but the worker never hears it: once
    for the id its blocking pop took, once for ids it popped itself. Asked again with the same
    execution ids, Redis reports what the lost call started, and the worker runs exactly that."""
    server, proxy, q = start_worker(fault_redis, lossy_proxy, processes)
    conn = q.connection
    proxy.arm(scripts.sha(CLAIM_SCRIPT).encode(), times=2)
    started = time.monotonic()
    jobs = q.enqueue_many([rq.Queue.prepare_data(tasks.record_sleep, (100,)) for _ in range(12)])
    ids = [j.id for j in jobs]

    def finished() -> bool:
        return all(
            j is not None and j.get_status(refresh=False) == JobStatus.FINISHED
            for j in RQJob.fetch_many(ids, connection=conn)
        )

    wait_for(finished, 20, lambda: f'{Counter(str(j.get_status()) for j in jobs)}\n{processes.logs()}')
    elapsed = time.monotonic() - started
    assert proxy.fired == 2
    ran = Counter(x.decode() for x in conn.lrange('ran', 0, -1))
    assert all(ran[i] == 1 for i in ids), ran
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert conn.llen(f'rq:queue:{QUEUE}:intermediate') == 0
    assert conn.scard('rq:worker:lossy:executions') == 0
    assert 'asking again' in processes.logs()
    print(f'\nlost claim replies: 12 jobs, 2 replies lost, 0 jobs lost, all done in {elapsed:.1f}s')


def test_a_lost_outcome_reply_counts_once_and_releases_the_slot(
    fault_redis: Callable[..., Server], lossy_proxy: Callable[[int], LossyProxy], processes: Processes
) -> None:
    """A success whose reply is lost is recognised as committed when written again: the job's
    rate-limit slot is released at once (the next job under the limit runs), the worker's count
    is one. A failure whose reply is lost spends one retry, not two."""
    server, proxy, q = start_worker(fault_redis, lossy_proxy, processes)
    conn = q.connection
    limit = rq.RateLimit('lossy-limit', 1)
    proxy.arm(scripts.sha(GUARDED_BATCH_SCRIPT).encode())
    started = time.monotonic()
    first = q.enqueue(tasks.record_add, 1, 2, rate_limit=limit)
    second = q.enqueue(tasks.record_add, 3, 4, rate_limit=limit)
    wait_for(lambda: second.get_status(refresh=True) == JobStatus.FINISHED, 15, processes.logs)
    slot_released = time.monotonic() - started
    assert proxy.fired == 1
    assert first.get_status(refresh=True) == JobStatus.FINISHED
    assert [r.type for r in first.results()] == [rq.results.Result.Type.SUCCESSFUL]
    assert int(conn.hget('rq:worker:lossy', 'successful_job_count') or 0) == 3

    proxy.arm(scripts.sha(GUARDED_BATCH_SCRIPT).encode())
    flaky = q.enqueue(tasks.fail_first_attempt, retry=rq.Retry(max=3))
    wait_for(lambda: flaky.get_status(refresh=True) == JobStatus.FINISHED, 15, processes.logs)
    assert proxy.fired == 2
    assert Counter(x.decode() for x in conn.lrange('ran', 0, -1))[flaky.id] == 2
    flaky.refresh()
    assert flaky.retries_left == 2
    assert int(conn.hget('rq:worker:lossy', 'failed_job_count') or 0) == 1
    print(f'\nlost outcome replies: 2, recognised as committed; the next rate-limited job done {slot_released:.1f}s in')
