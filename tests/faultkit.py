"""Helpers for the fault tests: a ``redis-server`` of the test's own that it may kill, restart on
the same port and directory (with or without its data), put to sleep or starve of memory; a proxy
that loses replies; worker command lines; and waiting with a deadline."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import free_port


class Server:
    """A private ``redis-server`` (never 6379). ``aof=True``: append-only file fsynced on every
    write (``appendfsync always``), so every acknowledged write survives even SIGKILL."""

    def __init__(self, *, aof: bool = False) -> None:
        binary = shutil.which('redis-server')
        if binary is None:
            raise RuntimeError('redis-server is not installed (apt-get install redis-server)')
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix='aiorq-fault-'))
        self.args = [
            binary,
            '--port',
            str(self.port),
            '--bind',
            '127.0.0.1',
            '--dir',
            str(self.dir),
            '--logfile',
            str(self.dir / 'redis.log'),
            '--save',
            '',
            '--appendonly',
            'yes' if aof else 'no',
            '--appendfsync',
            'always',
            # DEBUG SLEEP, for the slow-server test (refused by default since Redis 7).
            '--enable-debug-command',
            'local',
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f'redis://127.0.0.1:{self.port}/{db}'

    def client(self) -> redis.Redis:
        # A generous timeout: the test itself sends DEBUG SLEEP on it.
        return redis.Redis.from_url(self.url(), socket_timeout=30)

    def start(self) -> None:
        """Start (or restart) on the same port and directory; returns once it answers PING
        (after loading its append-only file, if any)."""
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f'redis-server did not start:\n{self.log()}')
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def log(self) -> str:
        path = self.dir / 'redis.log'
        return path.read_text(errors='replace')[-3000:] if path.exists() else ''

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fault_redis() -> Iterator[Callable[..., Server]]:
    """Makes private servers for one test; stops them and removes their files afterwards."""
    servers: list[Server] = []

    def make(**kwargs: Any) -> Server:
        server = Server(**kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *options]


def rq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'rq.cli', 'worker', '--url', url, *options]


def wait_for(condition: Callable[[], Any], timeout: float, what: Callable[[], str] | str, step: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout`` s
    with ``what`` (a message, or a function making one: worker logs, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {timeout}s waiting for: {what() if callable(what) else what}')
        time.sleep(step)


def attempts(path: Path) -> dict[str, int]:
    """Attempts per job id, as the jobs noted them in ``path`` (see ``tasks._note_attempt``)."""
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


class LossyProxy:
    """A TCP proxy in front of a Redis server that can lose replies. Armed with a byte pattern
    (a script's SHA1, say), it delivers the next request containing it to Redis, then cuts that
    client's connection before the reply reaches it: what a client sees when the server dies, or
    the network breaks, right after a write. Everything else passes through unchanged."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.port = free_port()
        self.pattern = b''
        self.armed = 0
        self.fired = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name='lossy-proxy', daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError('proxy did not start')

    def url(self, db: int = 0) -> str:
        return f'redis://127.0.0.1:{self.port}/{db}'

    def arm(self, pattern: bytes, times: int = 1) -> None:
        with self._lock:
            self.pattern, self.armed = pattern, times

    def _take(self, window: bytes) -> bool:
        with self._lock:
            if self.armed and self.pattern in window:
                self.armed -= 1
                self.fired += 1
                return True
            return False

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, '127.0.0.1', self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())

    async def _client(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection('127.0.0.1', self.redis_port)
        except OSError:
            client_w.close()
            return
        cut = asyncio.Event()

        async def upstream() -> None:
            tail = b''
            while not cut.is_set():
                chunk = await client_r.read(65536)
                if not chunk:
                    break
                window, tail = tail + chunk, chunk[-64:]
                doomed = self._take(window)
                if doomed:
                    cut.set()  # from now on nothing goes back to this client
                server_w.write(chunk)
                await server_w.drain()
                if doomed:
                    await asyncio.sleep(0.3)  # Redis runs the request; its reply is dropped
                    break

        async def downstream() -> None:
            while True:
                chunk = await server_r.read(65536)
                if not chunk or cut.is_set():
                    break
                client_w.write(chunk)
                await client_w.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            pass
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def lossy_proxy() -> Iterator[Callable[[int], LossyProxy]]:
    """Makes proxies (see :class:`LossyProxy`) for one test; stops them afterwards."""
    proxies: list[LossyProxy] = []

    def make(redis_port: int) -> LossyProxy:
        proxy = LossyProxy(redis_port)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()
