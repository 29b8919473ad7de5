"""Private ``redis-server`` processes for the tests (never the one on 6379)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which('redis-server')
        if binary is None:
            raise RuntimeError('redis-server is not installed (apt-get install redis-server)')
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='aiorq-redis-')
        self.proc = subprocess.Popen(
            [
                binary,
                '--port',
                str(self.port),
                '--bind',
                '127.0.0.1',
                '--save',
                '',
                '--appendonly',
                'no',
                '--dir',
                self.dir,
                '--databases',
                '16',
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError('redis-server did not start')

    def url(self, db: int = 0) -> str:
        return f'redis://127.0.0.1:{self.port}/{db}'

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        Path(self.dir).exists()
