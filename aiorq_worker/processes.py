"""``--sync-jobs process``: plain functions in a pool of child processes.

Each child is spawned once, runs start-up hooks once, then runs one job at a time; the job is
rebuilt from its hash with a blocking client of the child's own, so ``rq.get_current_job()``
works as under a stock worker. A child that overruns its timeout or gets a stop command is
killed and replaced, so a kill never breaks the pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

from aiorq.connections import Endpoint

logger = logging.getLogger('aiorq.worker')


class ChildJobError(Exception):
    """A job raised in a child process; the message is its formatted traceback."""


class Unserializable:
    """Stands in for a return value the child could not serialize (rq then stores its placeholder)."""

    def __reduce__(self) -> Any:
        raise TypeError('unserializable return value')


def _child(conn: Connection, server: Endpoint, paths: list[str], hooks: Sequence[Callable[..., Any]]) -> None:
    """The child's loop: receive (job id, stored hash, serializer), run, send the outcome."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    import rq.job
    from rq.job_lifecycle import format_exc_info
    from rq.serializers import resolve_serializer

    from .state import WorkerState, _current_worker
    from .tracebacks import user_frames

    client = server.sync_client()
    stub = SimpleNamespace(state=WorkerState(), name=f'child-{os.getpid()}')
    _current_worker.set(stub)
    for hook in hooks:
        asyncio.run(hook(stub))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        job_id, raw, serializer_ref = message
        serializer = resolve_serializer(serializer_ref)
        try:
            job = rq.job.Job(job_id, connection=client, serializer=serializer)
            job.restore(raw)
            token = rq.job._current_job.set(job)
            try:
                value = job.func(*job.args, **job.kwargs)
            finally:
                rq.job._current_job.reset(token)
        except BaseException:
            conn.send(('error', format_exc_info(user_frames(sys.exc_info()))))
            continue
        try:
            payload = serializer.dumps(value)
        except Exception:
            conn.send(('unserializable', None))
            continue
        conn.send(('ok', payload))


class Child:
    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child, args=(child_end, *args), daemon=True)
        self.process.start()
        child_end.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class ProcessPool:
    """Children run one job each at a time; ``run`` waits for a free child."""

    def __init__(self, size: int, server: Endpoint, hooks: Sequence[Callable[..., Any]] = ()) -> None:
        self.ctx = multiprocessing.get_context('spawn')
        self.args = (server, list(sys.path), list(hooks))
        self.size = size
        self.idle: asyncio.Queue[Child] = asyncio.Queue()
        self.children: list[Child] = []

    def _spawn(self) -> Child:
        child = Child(self.ctx, self.args)
        self.children.append(child)
        return child

    async def start(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.to_thread(self._spawn))

    async def run(self, job_id: str, raw: dict[bytes, bytes], serializer: Any, timeout: float | None) -> Any:
        """The job's return value (deserialized), or ``ChildJobError``; ``asyncio.TimeoutError``
        and cancellation kill the child, which is replaced."""
        child = await self.idle.get()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            if not done.done():
                try:
                    done.set_result(child.conn.recv())
                except Exception as e:  # the child died
                    done.set_exception(e)

        fd = child.conn.fileno()
        healthy = False
        try:
            child.conn.send((job_id, raw, _serializer_ref(serializer)))
            loop.add_reader(fd, readable)
            kind, payload = await asyncio.wait_for(done, timeout)
            healthy = True
        except EOFError:
            raise ChildJobError(f'Work-horse terminated unexpectedly; exit code {child.process.exitcode}; ') from None
        finally:
            try:
                loop.remove_reader(fd)
            except Exception:
                pass
            if healthy:
                self.idle.put_nowait(child)
            else:
                self.children.remove(child)
                await asyncio.to_thread(child.kill)
                self.idle.put_nowait(await asyncio.to_thread(self._spawn))
        if kind == 'error':
            raise ChildJobError(payload)
        if kind == 'unserializable':
            return Unserializable()
        return serializer.loads(payload)

    async def close(self) -> None:
        for child in self.children:
            await asyncio.to_thread(child.kill)
        self.children.clear()


def _serializer_ref(serializer: Any) -> Any:
    """What the child passes to ``resolve_serializer``: an import path, picklable."""
    from rq.serializers import DefaultSerializer, JSONSerializer

    if serializer is DefaultSerializer or isinstance(serializer, DefaultSerializer):
        return None
    if serializer is JSONSerializer or isinstance(serializer, JSONSerializer):
        return 'json'
    module = getattr(serializer, '__module__', None)
    name = getattr(serializer, '__qualname__', None) or type(serializer).__qualname__
    return f'{module}.{name}'
