"""Driving the dashboard in tests: an HTTP client on the ASGI app (no server), and its actions
posted as a browser posts them (the CSRF cookie repeated in the form, the confirmation given)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import httpx
import redis
import rq
import tasks
from redis.asyncio import Redis

import aiorq.web
from aiorq import Queue

BASE = 'http://dashboard.test'


@asynccontextmanager
async def client(conn: Redis, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = aiorq.web.dashboard(conn, **options)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def csrf(c: httpx.AsyncClient) -> str:
    """The CSRF token the dashboard gave this client (a first page view sets the cookie)."""
    if not c.cookies.get('aiorq_csrf'):
        page = await c.get('/groups')
        assert page.status_code == 200, page.text
    return str(c.cookies['aiorq_csrf'])


async def act(c: httpx.AsyncClient, action: str, **fields: str) -> tuple[str, str]:
    """POST an action, confirmed; returns the flash (kind, message) it left."""
    data = {'csrf': await csrf(c), 'confirmed': 'yes', 'next': '/', **fields}
    response = await c.post(f'/actions/{action}', data=data)
    assert response.status_code == 303, response.text
    flash = unquote(response.cookies.get('aiorq_flash', ''))
    kind, _, message = flash.partition('|')
    return kind, message


def start_dashboard(url: str, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``aiorq dashboard`` in a process of its own, serving Redis ``url`` on ``port``; output
    to a temporary file (read it with :func:`output`)."""
    log = tempfile.TemporaryFile()
    cmd = [sys.executable, '-m', 'aiorq_worker', 'dashboard', '--url', url, '--port', str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read().decode(errors='replace'))


def wait_serving(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    """Until the server answers HTTP (any status), or fail with its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'aiorq dashboard exited with {proc.returncode}:\n{output(proc)}')
        try:
            httpx.get(f'http://127.0.0.1:{port}/static/dashboard.css', timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f'aiorq dashboard did not answer in {timeout} s:\n{output(proc)}')


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


async def fill_failed(conn: Redis, sync: redis.Redis, queue: str, n: int) -> None:
    """``n`` realistic rq job hashes (aiorq's enqueue_many), then moved to the failed registry
    as a failure leaves them: out of the queue, status ``failed``, scored now + failure_ttl."""
    q = Queue(queue, connection=conn)
    for start in range(0, n, 5000):
        datas = [
            rq.Queue.prepare_data(tasks.fail, (f'job {i}',), job_id=f'{queue}-{i:06d}')
            for i in range(start, min(n, start + 5000))
        ]
        await q.enqueue_many(datas)
    ids = [m.decode() for m in sync.lrange(f'rq:queue:{queue}', 0, -1)]
    sync.delete(f'rq:queue:{queue}')
    now = int(time.time())
    with sync.pipeline(transaction=False) as pipe:
        for i, job_id in enumerate(ids):
            pipe.zadd(f'rq:failed:{queue}', {job_id: now + 31_536_000 + i})
            pipe.hset(f'rq:job:{job_id}', 'status', 'failed')
        pipe.execute()
