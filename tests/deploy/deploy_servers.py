"""Real ``redis-server`` processes in deployment shapes (TLS, ACL, Sentinel) for tests/deploy.

Each server runs on a free loopback port with its files in a temporary directory; a
:class:`Servers` collection stops every process it started, by process id.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f'{binary} is not installed')
    return path


def worker_env(**extra: str) -> dict[str, str]:
    """The environment for worker subprocesses: no Redis URL of the caller's, deploy tasks importable."""
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL', 'RQ_KEY_PREFIX')}
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(HERE), env.get('PYTHONPATH', '')) if p)
    env.update(extra)
    return env


def aiorq_worker(*args: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', *args]


def rq_worker(*args: str) -> list[str]:
    return [sys.executable, '-m', 'rq.cli', 'worker', *args]


class Server:
    """One ``redis-server`` (or sentinel) process."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    def url(self, db: int = 0, user: str = '', password: str = '') -> str:
        auth = f'{user}:{password}@' if password else ''
        return f'redis://{auth}127.0.0.1:{self.port}/{db}'

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class Servers:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Server] = []

    def start(self, *args: str, port: int | None = None, tls: bool = False, config: str | None = None) -> Server:
        """``redis-server [config] --port P …`` (``--tls-port P --port 0`` with ``tls``); waits until it listens."""
        binary = require('redis-server')
        port = port or free_port()
        data = self.directory / f'redis-{port}'
        data.mkdir(exist_ok=True)
        head: list[str] = [binary]
        if config is not None:
            conf = data / 'redis.conf'
            conf.write_text(config)
            head.append(str(conf))
        ports = ['--tls-port', str(port), '--port', '0'] if tls else ['--port', str(port)]
        base = [*ports, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', str(data)]
        log = data / 'server.log'
        with log.open('wb') as out:
            proc = subprocess.Popen([*head, *base, *args], stdout=out, stderr=subprocess.STDOUT)
        server = Server(port, proc, log)
        self.started.append(server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f'redis-server exited: {log.read_text(errors="replace")[-2000:]}')
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                    return server
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f'redis-server did not listen on {port}')

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


# -- TLS -------------------------------------------------------------------------------------


class Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a second
    CA that signed none of them."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / 'ca.crt'
        self.ca_key = directory / 'ca.key'
        self.other_ca = directory / 'other-ca.crt'
        self.server_cert = directory / 'server.crt'
        self.server_key = directory / 'server.key'
        self.client_cert = directory / 'client.crt'
        self.client_key = directory / 'client.key'


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(['openssl', *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f'openssl {" ".join(args)} failed: {done.stderr}')


def make_certificates(directory: Path) -> Certificates:
    require('openssl')
    directory.mkdir(parents=True, exist_ok=True)
    c = Certificates(directory)
    key = ['-newkey', 'rsa:2048', '-nodes']
    for name in ('ca', 'other-ca'):
        # keyUsage: Python 3.13's default context verifies strictly (VERIFY_X509_STRICT) and
        # rejects a CA certificate without it.
        _openssl('req', '-x509', *key, '-keyout', f'{name}.key', '-out', f'{name}.crt', '-days', '2',
                 '-subj', f'/CN=aiorq test {name}', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
                 cwd=directory)  # fmt: skip
    (directory / 'server.ext').write_text('subjectAltName=IP:127.0.0.1,DNS:localhost\n')
    (directory / 'client.ext').write_text('extendedKeyUsage=clientAuth\n')
    for name in ('server', 'client'):
        _openssl('req', *key, '-keyout', f'{name}.key', '-out', f'{name}.csr', '-subj', f'/CN={name}',
                 cwd=directory)  # fmt: skip
        _openssl('x509', '-req', '-in', f'{name}.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
                 '-out', f'{name}.crt', '-days', '2', '-extfile', f'{name}.ext', cwd=directory)  # fmt: skip
    return c


def tls_supported() -> bool:
    """True when this redis-server was built with TLS (it then complains about the missing
    certificate rather than the unknown option)."""
    binary = require('redis-server')
    done = subprocess.run(
        [binary, '--port', '0', '--tls-port', str(free_port())], capture_output=True, text=True, timeout=10
    )
    return 'tls-cert-file' in done.stdout + done.stderr


# -- what a worker is doing, seen from the server -------------------------------------------


async def heartbeat_advances(conn: redis.Redis, queue: str, job_id: str, timeout: float) -> bool:
    """True once a running execution's deadline in the started registry moves forward: only the
    worker's heartbeat thread moves it, so this shows that thread's connection works."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = conn.zrange(f'rq:wip:{queue}', 0, -1, withscores=True)
        scores = [score for member, score in entries if member.decode().startswith(job_id)]
        if scores and first is None:
            first = scores[0]
        elif scores and first is not None and scores[0] > first:
            return True
        await asyncio.sleep(0.1)
    return False


def blocked_in_pop(conn: redis.Redis) -> int:
    """How many clients of this server wait in a blocking pop."""
    return len([c for c in conn.client_list() if c['cmd'] in ('blmove', 'blpop') and 'b' in c['flags']])


async def wait_blocked(conn: redis.Redis, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while blocked_in_pop(conn) < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True
