"""A Redis ACL user confined to rq's keys runs the client, an aiorq worker and a stock rq worker.

The rule is read from docs/deployment.md, so the documented rule is the tested one. Every command
the server refuses lands in ``ACL LOG``: after a run in which clients, workers, the scheduler,
suspension, a shutdown while blocked and jobs touching a key outside the user's patterns all
happened, the log must hold the outside keys and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import deploy_tasks
import redis
from deploy_servers import HERE, ROOT, Servers, aiorq_worker, rq_worker, servers, wait_blocked, worker_env
from processes import Processes

import aiorq
from aiorq import JobStatus, Queue

__all__ = ['servers']  # the fixture

USER, PASSWORD = 'rqapp', 'acl-test-Pa55'


def documented_rule() -> list[str]:
    """The ``ACL SETUSER`` line of docs/deployment.md, as arguments."""
    text = (ROOT / 'docs' / 'deployment.md').read_text()
    found = re.findall(r'^```text\n(ACL SETUSER .*?)\n```$', text, flags=re.M)
    assert len(found) == 1, 'docs/deployment.md must show exactly one ACL SETUSER rule'
    return shlex.split(found[0])


def create_user(admin: redis.Redis, prefix: str = 'rq') -> None:
    """The documented rule with the test's password (and ``prefix`` instead of ``rq``)."""
    args = documented_rule()
    assert args[:3] == ['ACL', 'SETUSER', USER] and {'>CHANGE-ME', '~rq:*', '&rq:*'} <= set(args), args
    args = [f'>{PASSWORD}' if a == '>CHANGE-ME' else a for a in args]
    args = [a.replace('rq:*', f'{prefix}:*') if a[:1] in '~&' else a for a in args]
    admin.execute_command(*args)


def denials(admin: redis.Redis) -> set[tuple[str, str]]:
    return {(e['reason'], e['object']) for e in admin.acl_log(count=1000)}


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str, logs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'{what}\n{logs.logs()}')
        await asyncio.sleep(0.1)


def rq_cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, '-m', 'rq.cli', *args], check=True, capture_output=True, env=worker_env(), timeout=30
    )


async def test_confined_user_runs_client_and_both_workers(servers: Servers, processes: Processes) -> None:
    server = servers.start()
    admin = redis.Redis(port=server.port)
    data = redis.Redis(port=server.port, db=2)
    create_user(admin)
    url = server.url(db=2, user=USER, password=PASSWORD)  # a database other than 0: SELECT is allowed
    conn = aiorq.from_url(url)
    try:
        q = Queue('q', connection=conn)
        jobs = [
            await q.enqueue(deploy_tasks.add, 1, 1),
            await q.enqueue(deploy_tasks.async_add, 2, 2),
            await q.enqueue(deploy_tasks.note_progress, 7),
            await q.enqueue(deploy_tasks.async_note_progress, 8),
        ]
        jobs.append(await q.enqueue(deploy_tasks.add, 3, 3, depends_on=jobs[0]))
        jobs.append(await q.enqueue_in(timedelta(seconds=1), deploy_tasks.add, 4, 4))
        outside = [
            await q.enqueue(deploy_tasks.touch_outside, 'outside:sync'),
            await q.enqueue(deploy_tasks.async_touch_outside, 'outside:async'),
        ]
        after = await q.enqueue(deploy_tasks.add, 5, 5)
        path = ['--path', str(HERE)]
        aio = processes.start('aiorq', aiorq_worker('--url', url, *path, '-s', '-n', 'acl-aiorq', 'q'))
        stock = processes.start('rq', rq_worker('--url', url, *path, '-s', '-n', 'acl-stock', 'q'))
        for job in [*jobs, *outside, after]:
            assert await job.latest_result(timeout=20) is not None, processes.logs()
        assert [await j.return_value() for j in [*jobs, after]] == [2, 4, 7, 8, 6, 8, 10]
        assert [(await j.get_meta()).get('progress') for j in jobs[2:4]] == [7, 8]
        # A job touching a key outside the user's patterns fails with the server's refusal
        # recorded; the workers keep serving (``after`` ran).
        assert [await j.get_status() for j in outside] == [JobStatus.FAILED, JobStatus.FAILED]
        for job in outside:
            failure = await job.latest_result()
            assert failure is not None and 'NoPermissionError: this user has no permissions' in (
                failure.exc_string or ''
            ), failure
        # Suspension wakes the aiorq worker's blocked pop (CLIENT UNBLOCK); resume serves again.
        rq_cli('suspend', '--url', url)
        await wait_for(
            lambda: data.hget('rq:worker:acl-aiorq', 'state') == b'suspended', 10, 'not suspended', processes
        )
        rq_cli('resume', '--url', url)
        rq_cli('info', '--url', url)
        resumed = await q.enqueue(deploy_tasks.add, 6, 6)
        assert await resumed.latest_result(timeout=10) is not None, processes.logs()
        # A warm shutdown while blocked in the pop ends at once (CLIENT UNBLOCK again).
        assert await wait_blocked(admin, 2, 10), processes.logs()
        started = time.monotonic()
        aio.send_signal(signal.SIGTERM)
        stock.send_signal(signal.SIGTERM)
        assert aio.wait(10) == 0, processes.logs()
        assert time.monotonic() - started < 5, processes.logs()
        stock.wait(20)
        assert denials(admin) == {('key', 'outside:sync'), ('key', 'outside:async')}, processes.logs()
    finally:
        await conn.aclose()
        admin.close()
        data.close()


PREFIXED_CLIENT = r"""
import asyncio, json, sys
import deploy_tasks
import aiorq

async def main(url):
    conn = aiorq.from_url(url)
    q = aiorq.Queue('q', connection=conn)
    jobs = [
        await q.enqueue(deploy_tasks.add, 1, 2),
        await q.enqueue(deploy_tasks.async_note_progress, 3),
        await q.enqueue(deploy_tasks.touch_outside, 'rq:intruder'),
        await q.enqueue(deploy_tasks.add, 4, 5),
    ]
    await q.enqueue(deploy_tasks.add, 0, 0, depends_on=jobs[0])
    out = []
    for job in jobs:
        result = await job.latest_result(timeout=20)
        status = (await job.get_status()).value
        out.append([job.id, status, result and result.return_value, result and result.exc_string])
    print(json.dumps(out))
    await conn.aclose()

asyncio.run(main(sys.argv[1]))
"""


async def test_confined_user_with_custom_key_prefix(servers: Servers, processes: Processes) -> None:
    """``RQ_KEY_PREFIX=myapp`` in the client's and the worker's environment, and a user confined
    to ``myapp:*``: everything works, nothing is written outside the prefix, and a job writing a
    key of the default ``rq:`` namespace is refused and recorded as failed."""
    server = servers.start()
    admin = redis.Redis(port=server.port)
    create_user(admin, prefix='myapp')
    url = server.url(user=USER, password=PASSWORD)
    env = worker_env(RQ_KEY_PREFIX='myapp')
    try:
        processes.start('aiorq', aiorq_worker('--url', url, '-n', 'prefixed', 'q'), env=env)
        done = subprocess.run(
            [sys.executable, '-c', PREFIXED_CLIENT, url], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr + processes.logs()
        rows = json.loads(done.stdout)
        assert [row[1:3] for row in rows] == [
            ['finished', 3],
            ['finished', 3],
            ['failed', None],
            ['finished', 9],
        ], rows
        assert 'NoPermissionError: this user has no permissions' in rows[2][3], rows
        keys = {k.decode() for k in admin.keys('*')}
        assert keys and all(k.startswith('myapp:') for k in keys), sorted(keys)
        assert 'myapp:worker:prefixed' in keys
        assert denials(admin) == {('key', 'rq:intruder')}, processes.logs()
    finally:
        admin.close()
