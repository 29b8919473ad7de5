"""``rediss://`` with certificate checks against a ``redis-server`` that listens on TLS only.

The server has no plain port (``--port 0``), so every connection the worker makes — its main
pool, the blocking pop, the pub/sub listener, the heartbeat thread, the process-mode children —
works only if it carries the URL's TLS settings; with ``--tls-auth-clients yes`` only if it also
presents the client certificate. The heartbeat thread is seen at work through the execution
deadlines it alone pushes forward.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import deploy_tasks
import pytest
import redis
from deploy_servers import (
    HERE,
    Certificates,
    Server,
    Servers,
    aiorq_worker,
    heartbeat_advances,
    make_certificates,
    servers,
    tls_supported,
    wait_blocked,
    worker_env,
)
from processes import Processes

import aiorq
from aiorq import JobStatus, Queue

__all__ = ['servers']  # the fixture


@pytest.fixture(scope='module')
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if not tls_supported():
        pytest.skip('this redis-server was built without TLS support (it does not know --tls-port)')
    return make_certificates(tmp_path_factory.mktemp('tls'))


def start_tls_server(servers: Servers, certs: Certificates, auth_clients: str) -> Server:
    return servers.start(
        '--tls-cert-file', str(certs.server_cert),
        '--tls-key-file', str(certs.server_key),
        '--tls-ca-cert-file', str(certs.ca),
        '--tls-auth-clients', auth_clients,
        tls=True,
    )  # fmt: skip


def tls_url(server: Server, ca: Path, certs: Certificates | None = None) -> str:
    url = f'rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required'
    if certs is not None:
        url += f'&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}'
    return url


def admin(server: Server, certs: Certificates) -> redis.Redis:
    return redis.Redis(
        port=server.port,
        ssl=True,
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client_cert),
        ssl_keyfile=str(certs.client_key),
    )


@pytest.mark.parametrize(
    ('auth_clients', 'sync_jobs'),
    [('no', 'thread'), ('yes', 'process')],
    ids=['server-cert-checked', 'client-cert-required'],
)
async def test_worker_over_tls(
    certificates: Certificates, servers: Servers, processes: Processes, auth_clients: str, sync_jobs: str
) -> None:
    server = start_tls_server(servers, certificates, auth_clients)
    url = tls_url(server, certificates.ca, certificates if auth_clients == 'yes' else None)
    sync = admin(server, certificates)
    conn = aiorq.from_url(url)
    try:
        q = Queue('q', connection=conn)
        slow = await q.enqueue(deploy_tasks.async_slow_add, 1, 1, 2.5)
        jobs = [
            await q.enqueue(deploy_tasks.add, 2, 2),
            await q.enqueue(deploy_tasks.async_add, 3, 3),
            await q.enqueue(deploy_tasks.note_progress, 40),  # the thread's (or child's) blocking client
            await q.enqueue(deploy_tasks.async_note_progress, 41),
        ]
        worker = processes.start(
            'worker',
            aiorq_worker('--url', url, '--path', str(HERE), '--job-monitoring-interval', '1', '--sync-jobs',
                         sync_jobs, '--concurrency', '2', '-n', 'tls', 'q'),
        )  # fmt: skip
        # The heartbeat thread pushes a running execution's deadline forward over TLS.
        assert await heartbeat_advances(sync, 'q', slow.id, 20), processes.logs()
        for job in [slow, *jobs]:
            assert await job.latest_result(timeout=20) is not None, processes.logs()
        assert [await j.return_value() for j in [slow, *jobs]] == [2, 4, 6, 40, 41]
        assert [await j.get_meta(refresh=True) for j in jobs[2:]] == [{'progress': 40}, {'progress': 41}]
        # Idle now, blocked in its pop over TLS: a new job is taken at once.
        assert await wait_blocked(sync, 1, 10), processes.logs()
        late = await q.enqueue(deploy_tasks.add, 20, 22)
        assert await late.latest_result(timeout=10) is not None
        assert await late.get_status() == JobStatus.FINISHED
        assert sync.hget('rq:worker:tls', 'state') in (b'idle', b'busy')
        assert worker.poll() is None, processes.logs()
        assert 'heartbeat failed' not in processes.log(worker), processes.logs()
    finally:
        await conn.aclose()
        sync.close()


def run_worker(url: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aiorq_worker('--url', url, '--burst', 'q'), env=worker_env(), capture_output=True, text=True, timeout=timeout
    )


def test_untrusted_server_fails_cleanly(certificates: Certificates, servers: Servers) -> None:
    """A CA that did not sign the server's certificate: exit 1 with one clear line, no hang."""
    server = start_tls_server(servers, certificates, 'no')
    started = time.monotonic()
    done = run_worker(tls_url(server, certificates.other_ca))
    assert time.monotonic() - started < 15
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith('aiorq worker: Redis error: ConnectionError:'), lines
    assert 'CERTIFICATE_VERIFY_FAILED' in lines[0], lines


def test_missing_client_certificate_fails_cleanly(certificates: Certificates, servers: Servers) -> None:
    """The server requires a client certificate the URL does not give: exit 1, one line."""
    server = start_tls_server(servers, certificates, 'yes')
    done = run_worker(tls_url(server, certificates.ca))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('aiorq worker: Redis error: '), done.stderr
