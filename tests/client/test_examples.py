"""The examples and the demo, run as a user runs them: real processes against the test Redis.

Each script enqueues with aiorq; a stock ``rq worker`` process (the examples directory on its
import path) runs the jobs.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aiorq import Queue

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / 'examples'


def clean_env() -> dict[str, str]:
    """The environment without a Redis URL, so only ``--url`` decides where the scripts go."""
    return {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL')}


async def run(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``python *args``; return the exit code and the combined output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=clean_env(),
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


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize('worker', ['aiorq', 'stock'])
async def test_demo_on_given_url(redis_url: str, conn: Redis, worker: str) -> None:
    extra = ['--stock-worker'] if worker == 'stock' else []
    code, out = await run(str(EXAMPLES / 'demo.py'), '--url', redis_url, *extra)
    assert code == 0, out
    assert f'running the worker ({"stock rq" if worker == "stock" else "aiorq"} worker --burst)' in out, out
    assert 'all 6 results are right' in out, out
    queue = Queue('my_queue', connection=conn)
    assert await queue.count == 0
    assert await queue.finished_job_registry.count == 6


async def test_demo_starts_its_own_redis() -> None:
    code, out = await run(str(EXAMPLES / 'demo.py'))
    assert code == 0, out
    assert 'started a private redis-server at redis://127.0.0.1:' in out, out
    assert 'all 6 results are right' in out, out


@pytest.mark.parametrize(
    ('script', 'expected', 'jobs'),
    [
        ('enqueue.py', 'Well done, Turner!', 1),
        ('decorator.py', 'Well done, Turner!', 1),
        ('dependencies.py', '3 + 3 = 6', 3),
        ('groups.py', 'results add up to 21', 3),
    ],
)
async def test_example_with_stock_worker(
    script: str, expected: str, jobs: int, redis_url: str, conn: Redis, tmp_path: Path
) -> None:
    log_path = tmp_path / 'worker.log'
    with log_path.open('wb') as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            '-m',
            'rq.cli',
            'worker',
            '--url',
            redis_url,
            '--path',
            str(EXAMPLES),
            'my_queue',
            cwd=ROOT,
            env=clean_env(),
            stdout=log,
            stderr=log,
        )
        try:
            code, out = await run(str(EXAMPLES / script), '--url', redis_url, timeout=60)
        finally:
            await stop(worker)
    assert code == 0, f'{out}\n--- worker log ---\n{log_path.read_text(errors="replace")}'
    assert expected in out
    queue = Queue('my_queue', connection=conn)
    assert await queue.count == 0
    assert await queue.finished_job_registry.count == jobs


async def test_example_without_worker_times_out(redis_url: str, conn: Redis) -> None:
    code, out = await run(str(EXAMPLES / 'enqueue.py'), '--url', redis_url, '--timeout', '0.3')
    assert code == 1, out
    assert 'No result for job' in out
    assert await Queue('my_queue', connection=conn).count == 1


# Manual pages whose every code block is taken from an example script (so the example's test checks it).
DOCS_FROM_EXAMPLES = {'groups.md': 'groups.py', 'testing.md': 'test_with_aiorq.py'}


@pytest.mark.parametrize(('page', 'script'), sorted(DOCS_FROM_EXAMPLES.items()))
def test_doc_code_is_example_code(page: str, script: str) -> None:
    text = (ROOT / 'docs' / page).read_text()
    source = (EXAMPLES / script).read_text()
    blocks = re.findall(r'^```python\n(.*?)^```$', text, flags=re.M | re.S)
    assert blocks, f'no code in docs/{page}'
    for block in blocks:
        indented = (textwrap.indent(block, ' ' * n) for n in range(0, 13, 4))
        assert any(candidate in source for candidate in indented), f'not in examples/{script}:\n{block}'
