"""Admission on an idle worker (issue 15, latency): a job that arrives while the worker waits in
Redis costs one blocking pop and one claim, nothing else between them and the job's start.

Read off Redis's own ``MONITOR`` (``redis-cli monitor``), in real time: jobs are enqueued one
at a time by stock rq, each after the last one finished, so the worker is idle in its pop each
time one arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable

import redis
import rq
import tasks
from redis.asyncio import Redis
from redis_server import RedisServer

from aiorq.protocol import dequeue
from aiorq_worker import Worker

JOBS = 8


def blocked_in_pop(sync_conn: redis.Redis) -> bool:
    """A connection waits in a pop now (``cmd`` alone is its last command, done or not)."""
    return any(c.get('cmd') in ('blmove', 'blpop') and 'b' in c.get('flags', '') for c in sync_conn.client_list())


async def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, 'timed out'
        await asyncio.sleep(0.01)


class Monitor:
    """Redis's ``MONITOR`` on a socket of its own, read by a thread until :meth:`stop`."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        self.data = bytearray()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.sock.sendall(b'MONITOR\r\n')
        while b'+OK\r\n' not in self.data:
            self.data += self.sock.recv(65536)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            self.data += chunk

    def stop(self) -> list[str]:
        """Every line logged so far (given a moment to arrive)."""
        if self.thread.is_alive():
            time.sleep(0.3)
            self.stopping.set()
            self.thread.join(5)
        self.sock.close()
        return self.data.decode(errors='replace').split('\r\n')


def worker_commands(lines: list[str]) -> list[tuple[str, str]]:
    """(client address, command) of every logged command: ``ts [db addr] "CMD" "arg" ...``."""
    out = []
    for line in lines:
        if '] "' not in line:
            continue
        head, _, rest = line.partition('] "')
        addr = head.rsplit(' ', 1)[-1]
        command = rest.split('"', 1)[0].upper()
        if command in ('CLIENT', 'EVALSHA', 'EVAL'):
            command += ' ' + rest.split('"')[2].upper()  # CLIENT ID, EVALSHA <sha>
        out.append((addr, command))
    return out


async def test_an_idle_worker_spends_one_pop_and_one_claim_per_job(
    conn: Redis, sync_conn: redis.Redis, redis_server: RedisServer
) -> None:
    claim_sha = hashlib.sha1(dequeue.CLAIM_SCRIPT.encode()).hexdigest().upper()
    worker = Worker('q', connection=conn, name='idle', concurrency=10)
    running = asyncio.ensure_future(worker.work())
    monitor = Monitor(redis_server.port)
    try:
        await wait_until(lambda: blocked_in_pop(sync_conn))
        monitor.start()
        q = rq.Queue('q', connection=sync_conn)
        for i in range(JOBS):
            job = q.enqueue(tasks.async_add, i, 1)
            await wait_until(lambda job=job: job.get_status(refresh=True) == 'finished')
            await wait_until(lambda: blocked_in_pop(sync_conn))
    finally:
        lines = monitor.stop()
        worker.request_stop()
        await asyncio.wait_for(running, 10)
    commands = worker_commands(lines)
    claims = [c for c in commands if c[1] == f'EVALSHA {claim_sha}']
    pops = [i for i, c in enumerate(commands) if c[1] == 'BLMOVE']
    # Each job: the pop that took it, then one claim for it (and whatever else was queued by
    # then: nothing); no claim that finds the queues empty before the worker blocks again.
    assert len(claims) == JOBS, commands
    assert len(pops) == JOBS, commands  # after each job (the first pop began before MONITOR did)
    # The id of the pop's connection (for CLIENT UNBLOCK) rides in the pop's own write: no round
    # trip of its own, so nothing of that connection's runs between the two.
    for i in pops:
        own = [c for c in commands[:i] if c[0] == commands[i][0]]
        assert own and own[-1][1] == 'CLIENT ID', commands[:i]
