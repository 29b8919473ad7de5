"""Worker subprocesses for the tests: output in log files (a pipe nobody reads would block
them), cleaned up by process id whatever happens."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes], IO[bytes], Path]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.directory / f'{name}-{len(self.procs)}.log'
        out = log.open('wb')
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs[proc.pid] = (name, proc, out, log)
        return proc

    def name_of(self, pid: int) -> str:
        return self.procs[pid][0]

    def log(self, proc: subprocess.Popen[bytes], tail: int = 4000) -> str:
        _, _, out, log = self.procs[proc.pid]
        out.flush()
        return log.read_text(errors='replace')[-tail:]

    def logs(self, tail: int = 3000) -> str:
        return '\n'.join(
            f'--- {name} pid {pid} rc {proc.poll()} ---\n{self.log(proc, tail)}'
            for pid, (name, proc, _, _) in self.procs.items()
        )

    def wait_all(self, timeout: float) -> dict[int, int | None]:
        deadline = time.monotonic() + timeout
        codes: dict[int, int | None] = {}
        for pid, (_, proc, _, _) in self.procs.items():
            try:
                codes[pid] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[pid] = None
        return codes

    def stop_all(self) -> None:
        for _, proc, out, _ in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            out.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
