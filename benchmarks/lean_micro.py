"""Micro-benchmark of the job codec on the worker's hot path: µs per job, lean vs rq's objects.

    python benchmarks/lean_micro.py [--number N] [--repeat R] [--quick]

No Redis: both paths start from the same claimed hash (``to_dict()`` of a job made with rq's
``Job.create``, as redis-py stores it, with the claim's start fields) and buffer their writes
into a :class:`aiorq.protocol.batch.Batch` (built, never sent). Per job and path:

* ``decode``: the claimed hash to what the worker runs on. rq path: ``restore_job`` plus what
  the claim adds to the object (the stored hash for the outcome's diff, the start fields), as
  ``dequeue.claim_executions`` does per row; lean: ``lean.decode``.
* ``call``: the payload decoded (function name, args, kwargs): ``codec.load_data`` / ``lean.decode_call``.
* ``success``: the success outcome's job-hash fields and results-stream entry. rq path: the copy
  of the job (``finish.plan``), ``to_dict()`` and the diff (``codec.save``) and rq's ``Result``
  codec (``outcomes.buffer_result``); lean: ``encode_success`` and ``encode_result``.

Each figure is the best of R runs of N jobs: many short runs, so that on a busy machine some run
undisturbed by other processes. Before timing, both paths' success writes are checked to leave
the same hash.
"""

from __future__ import annotations

import argparse
import copy
import sys
import timeit
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rq.job import Job, JobStatus
from rq.results import Result

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiorq.protocol import codec, keys, lean, outcomes  # noqa: E402
from aiorq.protocol.batch import Batch  # noqa: E402

WORKER = 'bench-worker'
STARTED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
ENDED = STARTED + timedelta(milliseconds=3)


def claimed_hash(job: Job) -> dict[bytes, bytes]:
    job.origin, job.enqueued_at, job._status = 'default', STARTED - timedelta(seconds=1), JobStatus.QUEUED
    raw = {k.encode(): codec.encode(v) for k, v in job.to_dict().items()}
    return raw | lean.encode_start(WORKER, STARTED)


def cases() -> dict[str, dict[bytes, bytes]]:
    small = Job.create('tasks.add', args=(1, 2), connection=codec.NOIO, timeout=180, id='small')
    larger = Job.create(
        'tasks.echo',
        args=('x' * 10_000, list(range(200))),
        kwargs={'user': 'ünïcode', 'blob': bytes(range(256)) * 8},
        connection=codec.NOIO,
        result_ttl=3600,
        failure_ttl=86400,
        meta={'progress': 0, 'tags': ['a', 'b']},
        id='larger',
    )
    return {'small job': claimed_hash(small), 'larger job (16 KB payload, meta)': claimed_hash(larger)}


# -- the rq-object path (what the worker runs today) ------------------------------------------


def rq_decode(job_id: str, raw: dict[bytes, bytes]) -> Job:
    """``dequeue.claim_executions``, per claimed row."""
    job = codec.restore_job(job_id, raw)
    job._aiorq_stored = dict(raw)  # type: ignore[attr-defined]
    job.worker_name = WORKER
    job.last_heartbeat = job.started_at = STARTED
    job._status = JobStatus.STARTED
    return job


def rq_success(job: Job, return_value: Any) -> Batch:
    """The job's writes of ``finish.finish_success`` (hash and Result entry)."""
    job.ended_at = job.last_heartbeat = ENDED  # the runner
    planned = copy.copy(job)  # finish.plan
    planned._result = return_value
    planned._status = JobStatus.FINISHED
    batch = Batch()
    codec.save(batch, planned, include_meta=False, include_result=False)
    outcomes.buffer_result(
        batch,
        planned,
        Result.Type.SUCCESSFUL,
        500,
        return_value=return_value,
        worker_name=WORKER,
        execution_id='e' * 32,
        execution_started_at=STARTED,
        execution_ended_at=planned.ended_at,
    )
    return batch


# -- the lean path ---------------------------------------------------------------------------


def lean_success(claimed: lean.Claimed, return_value: Any) -> Batch:
    batch = Batch()
    batch.hset(keys.job(claimed.id), mapping=lean.encode_success(ENDED))
    entry = lean.encode_result(
        Result.Type.SUCCESSFUL,
        return_value=return_value,
        worker_name=WORKER,
        execution_id='e' * 32,
        execution_started_at=STARTED,
        execution_ended_at=ENDED,
    )
    key = keys.results(claimed.id)
    batch.xadd(key, entry, maxlen=10)
    batch.expire(key, 500)
    return batch


def check_same_writes(job_id: str, raw: dict[bytes, bytes]) -> None:
    """Both paths leave the same job hash (the property tests prove it in general)."""
    rq_fields = codec.mapping(
        _finished(rq_decode(job_id, raw)),
        include_meta=False,
        include_result=False,
    )
    rq_hash = raw | {k.encode(): codec.encode(v) for k, v in rq_fields.items()}
    claimed = lean.decode(job_id, raw)
    assert not lean.needs_rq_job(claimed), claimed.fallback
    assert rq_hash == raw | lean.encode_success(ENDED), 'the lean and rq paths disagree'


def _finished(job: Job) -> Job:
    job.ended_at = job.last_heartbeat = ENDED
    job._status = JobStatus.FINISHED
    return job


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def measure(job_id: str, raw: dict[bytes, bytes], number: int, repeat: int) -> list[tuple[str, float, float]]:
    check_same_writes(job_id, raw)
    job, claimed = rq_decode(job_id, raw), lean.decode(job_id, raw)
    codec.load_data(job)
    value = {'answer': 42}

    def rq_call() -> object:
        fresh = rq_decode(job_id, raw)
        codec.load_data(fresh)
        return fresh.func_name, fresh.args, fresh.kwargs

    rows = [
        (
            'decode',
            best_us(lambda: rq_decode(job_id, raw), number, repeat),
            best_us(lambda: lean.decode(job_id, raw), number, repeat),
        ),
        (
            'decode + call',
            best_us(rq_call, number, repeat),
            best_us(lambda: lean.decode_call(lean.decode(job_id, raw)), number, repeat),
        ),
        (
            'success',
            best_us(lambda: rq_success(job, value), number, repeat),
            best_us(lambda: lean_success(claimed, value), number, repeat),
        ),
    ]
    total_rq = rows[0][1] + rows[2][1]
    total_lean = rows[0][2] + rows[2][2]
    return [*rows, ('decode + success', total_rq, total_lean)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--number', type=int, default=200, help='jobs per timed run')
    parser.add_argument('--repeat', type=int, default=50, help='timed runs (the best counts)')
    parser.add_argument('--quick', action='store_true', help='a smoke run (few jobs, noisy figures)')
    args = parser.parse_args()
    number, repeat = (50, 1) if args.quick else (args.number, args.repeat)
    print(f'Python {sys.version.split()[0]}; best of {repeat} runs of {number} jobs; µs per job')
    for name, raw in cases().items():
        job_id = 'small' if name.startswith('small') else 'larger'
        print(f'\n{name}')
        print(f'  {"step":<18} {"rq objects":>11} {"lean":>8} {"ratio":>7}')
        for step, rq_us, lean_us in measure(job_id, raw, number, repeat):
            print(f'  {step:<18} {rq_us:>11.2f} {lean_us:>8.2f} {rq_us / lean_us:>6.1f}x')


if __name__ == '__main__':
    main()
