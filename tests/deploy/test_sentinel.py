"""Redis Sentinel: ``SENTINEL`` in a config module (``aiorq worker -c``) and a ``master_for``
client in the API, with a master, a replica and a sentinel as real ``redis-server`` processes;
the master is killed while the worker runs jobs.

Every connection the worker derives from its client (the heartbeat thread's, the blocking pop's,
the result waits') goes through the same sentinels, so after the failover all of them reach the
new master: the jobs in flight finish there, each exactly once, and the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import deploy_tasks
import redis
import rq.command
from deploy_servers import (
    HERE,
    ROOT,
    Server,
    Servers,
    aiorq_worker,
    free_port,
    heartbeat_advances,
    rq_worker,
    servers,
    wait_blocked,
    worker_env,
)
from processes import Processes
from redis.asyncio.sentinel import Sentinel

from aiorq import JobStatus, Queue
from aiorq_worker import Worker

__all__ = ['servers']  # the fixture

SERVICE = 'mymaster'


def documented_settings(sentinel_ports: list[int]) -> str:
    """The config module of docs/deployment.md, pointed at the test's sentinels."""
    text = (ROOT / 'docs' / 'deployment.md').read_text()
    blocks = [b for b in re.findall(r'^```python\n(.*?)^```$', text, flags=re.M | re.S) if 'SENTINEL = {' in b]
    assert len(blocks) == 1, 'docs/deployment.md must show one SENTINEL config module'
    instances = ', '.join(f"('127.0.0.1', {port})" for port in sentinel_ports)
    settings, count = re.subn(r"'INSTANCES': \[.*?\],", f"'INSTANCES': [{instances}],", blocks[0])
    assert count == 1
    return settings


def info(server: Server, section: str) -> dict[str, Any]:
    with redis.Redis(port=server.port) as r:
        return dict(r.info(section))


class Deployment:
    """A master, a replica and one sentinel (quorum 1, down after 1 s)."""

    def __init__(self, servers: Servers) -> None:
        self.master = servers.start()
        self.replica = servers.start('--replicaof', '127.0.0.1', str(self.master.port))
        config = (
            f'sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n'
            f'sentinel down-after-milliseconds {SERVICE} 1000\n'
            f'sentinel failover-timeout {SERVICE} 5000\n'
        )
        self.sentinel = servers.start('--sentinel', port=free_port(), config=config)
        self.admin = redis.Redis(port=self.sentinel.port)

    def switched(self) -> bool:
        """The sentinel names the replica as a master in good state (what clients ask it)."""
        state = self.admin.sentinel_master(SERVICE)
        return int(state['port']) == self.replica.port and not (state['is_sdown'] or state['is_odown'])

    async def ready(self) -> None:
        """The replica in sync and known to the sentinel."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            replicas = self.admin.sentinel_slaves(SERVICE)
            if replicas and info(self.replica, 'replication').get('master_link_status') == 'up':
                return
            await asyncio.sleep(0.1)
        raise AssertionError('the sentinel does not see an in-sync replica')

    async def kill_master(self) -> float:
        """Kill the master once the replica has every acknowledged write; the seconds until the
        sentinel names the replica as master.

        Writes are paused first (``CLIENT PAUSE … WRITE``, as a planned switch-over does) so that
        no write the worker saw succeed is lost with the master: Redis replication is
        asynchronous, and a write acknowledged but not yet replicated dies with the master
        whoever wrote it. The writes held by the pause fail with the connection and are retried
        by the worker against the new master."""
        with redis.Redis(port=self.master.port) as m:
            m.client_pause(20_000, all=False)
            offset = m.info('replication')['master_repl_offset']
        deadline = time.monotonic() + 10
        while info(self.replica, 'replication').get('slave_repl_offset', -1) < offset:
            assert time.monotonic() < deadline, 'the replica did not catch up'
            await asyncio.sleep(0.02)
        self.master.kill()
        started = time.monotonic()
        while not self.switched():
            assert time.monotonic() - started < 20, 'no failover'
            await asyncio.sleep(0.1)
        return time.monotonic() - started


async def test_failover_during_a_run(servers: Servers, processes: Processes, tmp_path: Path) -> None:
    d = Deployment(servers)
    await d.ready()
    (tmp_path / 'sentinel_settings.py').write_text(documented_settings([d.sentinel.port]))
    # The API: a master_for client with a 1 s socket timeout, for the queue and for waits longer than that.
    manager = Sentinel([('127.0.0.1', d.sentinel.port)], socket_timeout=1)
    client = manager.master_for(SERVICE, socket_timeout=1)
    new_master = redis.Redis(port=d.replica.port)  # the replica, until the failover
    try:
        # In-process Workers on the API client: their heartbeat threads, the thread's client of
        # a plain job and a process-mode child's client are Sentinel clients too.
        api = Queue('api', connection=client)
        for sync_jobs in ('thread', 'process'):
            api_jobs = [await api.enqueue(deploy_tasks.note_progress, 1)]
            api_jobs.append(await api.enqueue(deploy_tasks.async_add, 2, 0))
            in_process = Worker('api', connection=client, concurrency=1, sync_jobs=sync_jobs)
            await in_process.work(burst=True)
            assert [await j.return_value() for j in api_jobs] == [1, 2], sync_jobs
            assert await api_jobs[0].get_meta() == {'progress': 1}, sync_jobs
        # The same config module serves a stock `rq worker -c`; an aiorq coroutine job run by it
        # reaches Redis through an asyncio client derived from rq's Sentinel client.
        stock_job = await api.enqueue(deploy_tasks.async_note_progress, 5)
        settings = ['-c', 'sentinel_settings', '--path', str(tmp_path), '--path', str(HERE)]
        stock = subprocess.run(rq_worker(*settings, '-b', 'api'), env=worker_env(), capture_output=True, timeout=60)
        assert stock.returncode == 0, stock.stdout + stock.stderr
        assert await stock_job.return_value() == 5 and await stock_job.get_meta() == {'progress': 5}

        q = Queue('q', connection=client)
        jobs = []
        for i in range(60):
            func = deploy_tasks.async_slow_add if i % 2 else deploy_tasks.slow_add
            jobs.append(await q.enqueue(func, i, 0, 0.1))
        worker = processes.start(
            'aiorq',
            aiorq_worker('-c', 'sentinel_settings', '--path', str(tmp_path), '--path', str(HERE), '--concurrency', '4',
                         '--job-monitoring-interval', '1', '-n', 'sentinel', 'q'),
        )  # fmt: skip
        finished = q.finished_job_registry
        deadline = time.monotonic() + 20
        while await finished.count < 10:
            assert time.monotonic() < deadline and worker.poll() is None, processes.logs()
            await asyncio.sleep(0.05)
        switch = await d.kill_master()
        assert await finished.count < len(jobs), 'the run ended before the failover'

        # Every job finishes, once, on the new master.
        deadline = time.monotonic() + 30
        while await finished.count < len(jobs):
            assert time.monotonic() < deadline, f'{await finished.count} finished\n{processes.logs()}'
            await asyncio.sleep(0.1)
        assert [await j.get_status() for j in jobs] == [JobStatus.FINISHED] * len(jobs)
        assert [await j.return_value() for j in jobs] == list(range(len(jobs)))
        assert [await j.result_count() for j in jobs] == [1] * len(jobs)
        assert await q.failed_job_registry.count == 0
        assert new_master.zcard('rq:wip:q') == 0

        # The worker keeps serving: its blocking pop, waits through a 1 s socket timeout, and the
        # heartbeat thread all reach the new master.
        assert await wait_blocked(new_master, 1, 10), f'no blocking pop on the new master\n{processes.logs()}'
        late = await q.enqueue(deploy_tasks.async_slow_add, 20, 22, 2.5)
        assert await heartbeat_advances(new_master, 'q', late.id, 10), processes.logs()
        result = await late.latest_result(timeout=10)
        assert result is not None and result.return_value == 42
        assert new_master.hget('rq:worker:sentinel', 'state') in (b'idle', b'busy')
        # Its command listener re-subscribed there too: a shutdown command stops it.
        assert worker.poll() is None, processes.logs()
        rq.command.send_shutdown_command(new_master, 'sentinel')
        assert worker.wait(10) == 0, processes.logs()
        print(f'sentinel failover took {switch:.1f}s')
    finally:
        await client.aclose()
        for sentinel in manager.sentinels:  # Sentinel.aclose() came with redis-py 8
            await sentinel.aclose()
        new_master.close()
        d.admin.close()
