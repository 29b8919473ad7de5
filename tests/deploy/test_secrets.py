"""The password of a ``redis://user:secret@host`` URL never leaves: not in the worker's log (at
DEBUG level, through refused credentials and lost connections), not in Redis (every value of
every key scanned), not in an exception message or the repr of a derived client."""

from __future__ import annotations

import asyncio
import subprocess
import time

import deploy_tasks
import pytest
import redis
from deploy_servers import HERE, Server, Servers, aiorq_worker, free_port, servers, worker_env
from processes import Processes
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

import aiorq
from aiorq import JobStatus, Queue
from aiorq.connections import blocking_client, endpoint, sync_connection

__all__ = ['servers']  # the fixture

USER, SECRET, WRONG = 'app', 'S3cret-Pa55-d8e1', 'Wr0ng-Pa55-93c0'


def everything_stored(admin: redis.Redis) -> bytes:
    """Every key name and value of every database, as one blob."""
    blob = bytearray()
    for db in range(16):
        r = admin if db == 0 else redis.Redis(port=admin.connection_pool.connection_kwargs['port'], db=db)
        for key in r.scan_iter(count=1000):
            blob += key
            kind = r.type(key)
            if kind == b'string':
                blob += r.get(key) or b''
            elif kind == b'hash':
                for f, v in r.hgetall(key).items():
                    blob += f + v
            elif kind == b'list':
                blob += b''.join(r.lrange(key, 0, -1))
            elif kind == b'set':
                blob += b''.join(r.smembers(key))
            elif kind == b'zset':
                blob += b''.join(m for m, _ in r.zrange(key, 0, -1, withscores=True))
            elif kind == b'stream':
                for entry_id, fields in r.xrange(key):
                    blob += entry_id + b''.join(f + v for f, v in fields.items())
        if r is not admin:
            r.close()
    return bytes(blob)


def setup_user(server: Server) -> redis.Redis:
    admin = redis.Redis(port=server.port)
    admin.acl_setuser(USER, enabled=True, passwords=[f'+{SECRET}'], keys=['*'], channels=['*'], commands=['+@all'])
    return admin


async def test_secret_stays_out_of_logs_and_redis(servers: Servers, processes: Processes) -> None:
    server = servers.start()
    admin = setup_user(server)
    url = server.url(user=USER, password=SECRET)
    conn = aiorq.from_url(url)
    try:
        q = Queue('q', connection=conn)
        first = [
            await q.enqueue(deploy_tasks.add, 1, 1),
            await q.enqueue(deploy_tasks.note_progress, 2),
            await q.enqueue(deploy_tasks.fail, 'a failure with a traceback'),
        ]
        worker = processes.start(
            'worker',
            aiorq_worker(
                '-v',
                '--log-format',
                '%(levelname)s %(name)s %(message)s',
                '--url',
                url,
                '--path',
                str(HERE),
                '--job-monitoring-interval',
                '1',
                '-n',
                'secretive',
                'q',
            ),  # fmt: skip
        )
        for job in first:
            assert await job.latest_result(timeout=20) is not None, processes.logs()
        # Refused credentials while running: the password changes, every connection of the
        # user is cut; the worker keeps retrying (logging at DEBUG) until it is restored.
        admin.acl_setuser(
            USER,
            enabled=True,
            reset_passwords=True,
            passwords=[f'+{WRONG}'],
            keys=['*'],
            channels=['*'],
            commands=['+@all'],
        )
        admin.client_kill_filter(_type='normal', skipme=True)
        admin.client_kill_filter(_type='pubsub', skipme=True)
        deadline = time.monotonic() + 15
        while 'invalid username-password pair' not in processes.log(worker, tail=100_000):
            assert time.monotonic() < deadline, processes.logs()
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # heartbeats and pops fail a few times
        admin.acl_setuser(
            USER,
            enabled=True,
            reset_passwords=True,
            passwords=[f'+{SECRET}'],
            keys=['*'],
            channels=['*'],
            commands=['+@all'],
        )
        await conn.aclose()
        conn = aiorq.from_url(url)
        late = await Queue('q', connection=conn).enqueue(deploy_tasks.add, 20, 22)
        assert await late.latest_result(timeout=30) is not None, processes.logs()
        assert await late.get_status() == JobStatus.FINISHED
        assert worker.poll() is None
        log = processes.log(worker, tail=1_000_000)
        assert 'DEBUG ' in log and 'Traceback' in log  # the verbose paths ran
        assert SECRET not in log and WRONG not in log
        stored = everything_stored(admin)
        assert b'secretive' in stored  # the worker hash was scanned
        assert SECRET.encode() not in stored and WRONG.encode() not in stored
    finally:
        await conn.aclose()
        admin.close()


@pytest.mark.parametrize('verbose', [False, True], ids=['quiet', 'verbose'])
def test_secret_stays_out_of_startup_failures(servers: Servers, verbose: bool) -> None:
    """Wrong password, and nothing listening: exit 1 without the password (``-v`` shows the traceback)."""
    server = servers.start()
    setup_user(server).close()
    flags = ['-v'] if verbose else []
    for url in (server.url(user=USER, password=WRONG), f'redis://{USER}:{SECRET}@127.0.0.1:{free_port()}/0'):
        done = subprocess.run(
            aiorq_worker(*flags, '--url', url, '--burst', 'q'),
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert ('AuthenticationError' in output) or ('Connection refused' in output), output
        assert SECRET not in output and WRONG not in output, output
        if not verbose:
            assert len(done.stderr.strip().splitlines()) == 1, output


async def test_secret_stays_out_of_reprs_and_errors(servers: Servers) -> None:
    server = servers.start()
    setup_user(server).close()
    client = aiorq.from_url(server.url(user=USER, password=SECRET))
    wrong = aiorq.from_url(server.url(user=USER, password=WRONG))
    nowhere = aiorq.from_url(f'redis://{USER}:{SECRET}@127.0.0.1:{free_port()}/0')
    waiter, sync = blocking_client(client), sync_connection(client)
    try:
        assert await waiter.ping() and sync.ping()  # the derived clients authenticate
        for thing in (client, waiter, sync, endpoint(client), endpoint(client).portable()):
            assert SECRET not in repr(thing), repr(thing)
        with pytest.raises(AuthenticationError) as refused:
            await wrong.ping()
        with pytest.raises(RedisConnectionError) as unreachable:
            await nowhere.ping()
        for error in (refused.value, unreachable.value):
            assert SECRET not in str(error) and WRONG not in str(error) and SECRET not in repr(error)
    finally:
        for c in (client, waiter, wrong, nowhere):
            await c.aclose()
        sync.close()
