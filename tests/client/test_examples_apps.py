"""The application examples, run as a user runs them (real processes against the test Redis):
the pytest-asyncio example of ``aiorq.testing``, the Starlette app, fan-out, progress and the
mixed fleet."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest
import redis
import starlette_app
from processes import Processes
from redis.asyncio import Redis
from waiting import wait_for

import aiorq
from aiorq import JobStatus, Queue

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / 'examples'


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without a Redis URL, so only what the test passes decides where scripts go."""
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL')}
    return {**env, **extra}


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> tuple[int, str]:
    """Run ``python *args``; return the exit code and the combined output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors='replace')


def start_worker(processes: Processes, kind: str, url: str) -> None:
    """``aiorq worker`` or stock ``rq worker`` on my_queue, importing the examples' ``mylib``."""
    cli = ['-m', 'aiorq_worker'] if kind == 'aiorq' else ['-m', 'rq.cli']
    args = [sys.executable, *cli, 'worker', '--url', url, '--path', str(EXAMPLES), 'my_queue']
    processes.start(kind, args, env=clean_env())


async def test_pytest_example(redis_url: str, conn: Redis) -> None:
    args = ['-m', 'pytest', str(EXAMPLES / 'test_with_aiorq.py'), '-q', '-p', 'no:cacheprovider']
    code, out = await run(*args, env=clean_env(RQ_REDIS_URL=redis_url))
    assert code == 0, out
    assert '5 passed' in out and 'skipped' not in out, out


async def test_pytest_example_skips_without_redis() -> None:
    args = ['-m', 'pytest', str(EXAMPLES / 'test_with_aiorq.py'), '-q', '-p', 'no:cacheprovider']
    code, out = await run(*args)
    assert code == 0, out
    assert '5 skipped' in out, out


async def test_starlette_app_with_worker_process(
    conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    start_worker(processes, 'aiorq', redis_url)
    await wait_for(lambda: aiorq.count_workers(conn, queue='my_queue'), 20)
    transport = httpx.ASGITransport(app=starlette_app.create_app(conn))
    async with httpx.AsyncClient(transport=transport, base_url='http://app') as client:
        replies = await asyncio.gather(*[client.post('/add', json={'a': i, 'b': 1}) for i in range(5)])
        assert [r.status_code for r in replies] == [200] * 5, processes.logs()
        assert [r.json()['result'] for r in replies] == [1, 2, 3, 4, 5]
        job_id = replies[0].json()['job']
        assert (await client.get(f'/jobs/{job_id}')).json() == {'job': job_id, 'status': 'finished', 'result': 1}
        assert (await client.get('/jobs/nope')).status_code == 404
    assert sync_conn.zcard('rq:finished:my_queue') == 5


async def test_starlette_app_times_out_without_worker(conn: Redis) -> None:
    transport = httpx.ASGITransport(app=starlette_app.create_app(conn, wait=0.2))
    async with httpx.AsyncClient(transport=transport, base_url='http://app') as client:
        reply = await client.post('/add', json={'a': 1, 'b': 2})
        assert reply.status_code == 504
        assert (await client.get(f'/jobs/{reply.json()["job"]}')).json()['status'] == 'queued'
    assert await Queue('my_queue', connection=conn).count == 1


async def test_starlette_script(redis_url: str, conn: Redis) -> None:
    """By hand, the script serves a request with an in-process worker (``worker_running``)."""
    code, out = await run(str(EXAMPLES / 'starlette_app.py'), '--url', redis_url)
    assert code == 0, out
    assert "'status': 'finished', 'result': 3}" in out, out
    assert await aiorq.count_workers(conn) == 0


@pytest.mark.parametrize('worker', ['aiorq', 'rq'])
async def test_fan_out(worker: str, redis_url: str, conn: Redis, processes: Processes) -> None:
    start_worker(processes, worker, redis_url)
    code, out = await run(str(EXAMPLES / 'fan_out.py'), '--url', redis_url)
    assert code == 0, f'{out}\n{processes.logs()}'
    assert 'the squares [1, 4, 9, 16, 25] of Group(id=' in out and 'add up to 55' in out, out
    finished = Queue('my_queue', connection=conn).finished_job_registry
    assert await finished.count == 7  # the fan-out job, five squares, the total


@pytest.mark.parametrize('worker', ['aiorq', 'rq'])
async def test_progress(worker: str, redis_url: str, conn: Redis, processes: Processes) -> None:
    start_worker(processes, worker, redis_url)
    code, out = await run(str(EXAMPLES / 'progress.py'), '--url', redis_url)
    assert code == 0, f'{out}\n{processes.logs()}'
    assert 'progress seen while running: [20, 40' in out and 'finished with 100%' in out, out
    (job_id,) = await Queue('my_queue', connection=conn).finished_job_registry.get_job_ids()
    job = await aiorq.Job.fetch(job_id, connection=conn)
    assert job.meta == {'progress': 100} and await job.get_status() == JobStatus.FINISHED


async def test_mixed_fleet(redis_url: str, conn: Redis, sync_conn: redis.Redis) -> None:
    code, out = await run(str(EXAMPLES / 'mixed_fleet.py'), '--url', redis_url)
    assert code == 0, out
    assert "16 jobs enqueued by aiorq and rq, all results right; ran by: {'aiorq-worker': " in out, out
    assert "'rq-worker': " in out, out
    assert await Queue('my_queue', connection=conn).finished_job_registry.count == 16
    assert await aiorq.count_workers(conn) == 0  # both shut down
    assert sync_conn.hget('rq:worker:rq-worker', 'death') and sync_conn.hget('rq:worker:aiorq-worker', 'death')
