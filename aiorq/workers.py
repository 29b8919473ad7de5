"""Reading the registered workers (what ``rq.Worker.all``/``Worker.count`` give), sending them
commands, and suspending them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from rq.utils import utcparse

from . import protocol as p
from .connections import resolve_connection

if TYPE_CHECKING:
    from .queue import Queue

__all__ = [
    'WorkerInfo',
    'get_workers',
    'count_workers',
    'send_command',
    'send_shutdown_command',
    'send_kill_horse_command',
    'send_stop_job_command',
    'send_stop_execution_command',
    'suspend',
    'resume',
    'is_suspended',
]


@dataclass
class WorkerInfo:
    """A snapshot of ``rq:worker:<name>``, decoded as ``rq.Worker.refresh`` does."""

    name: str
    key: str
    queue_names: list[str] = field(default_factory=list)
    state: str = '?'
    hostname: str | None = None
    ip_address: str | None = None
    pid: int | None = None
    version: str | None = None
    python_version: str | None = None
    birth_date: datetime | None = None
    last_heartbeat: datetime | None = None
    death_date: datetime | None = None
    shutdown_requested_date: datetime | None = None
    successful_job_count: int = 0
    failed_job_count: int = 0
    total_working_time: float = 0.0
    current_executions: list[str] = field(default_factory=list)

    def get_state(self) -> str:
        return self.state

    @classmethod
    def from_hash(cls, name: str, data: dict[str, str], executions: list[str]) -> WorkerInfo:
        def date(k: str) -> datetime | None:
            return utcparse(data[k]) if data.get(k) else None

        return cls(
            name=name,
            key=p.keys.worker(name),
            queue_names=data['queues'].split(',') if data.get('queues') else [],
            state=data.get('state', '?'),
            hostname=data.get('hostname') or None,
            ip_address=data.get('ip_address') or None,
            pid=int(data['pid']) if data.get('pid') else None,
            version=data.get('version') or None,
            python_version=data.get('python_version') or None,
            birth_date=date('birth'),
            last_heartbeat=date('last_heartbeat'),
            death_date=date('death'),
            shutdown_requested_date=date('shutdown_requested_date'),
            successful_job_count=int(data.get('successful_job_count') or 0),
            failed_job_count=int(data.get('failed_job_count') or 0),
            total_working_time=float(data.get('total_working_time') or 0),
            current_executions=executions,
        )


async def get_workers(connection: Redis | None = None, queue: Queue | str | None = None) -> list[WorkerInfo]:
    """Every live registered worker (stale set members are dropped, as ``Worker.all`` does)."""
    conn = resolve_connection(connection)
    queue_name = queue if isinstance(queue, str) or queue is None else queue.name
    found = []
    for name, data in await p.workers.all_workers(conn, queue_name):
        found.append(WorkerInfo.from_hash(name, data, await p.workers.worker_execution_members(conn, name)))
    return found


async def count_workers(connection: Redis | None = None, queue: Queue | str | None = None) -> int:
    queue_name = queue if isinstance(queue, str) or queue is None else queue.name
    return await p.workers.count_workers(resolve_connection(connection), queue_name)


async def send_command(connection: Redis | None, worker_name: str, command: str, **kwargs: object) -> None:
    await p.workers.send_command(resolve_connection(connection), worker_name, command, **kwargs)


async def send_shutdown_command(connection: Redis | None, worker_name: str) -> None:
    await send_command(connection, worker_name, 'shutdown')


async def send_kill_horse_command(connection: Redis | None, worker_name: str) -> None:
    await send_command(connection, worker_name, 'kill-horse')


async def send_stop_job_command(connection: Redis | None, job_id: str) -> None:
    """Ask the worker running ``job_id`` to stop it (``InvalidJobOperation`` if none is)."""
    await p.workers.send_stop_job_command(resolve_connection(connection), job_id)


async def send_stop_execution_command(connection: Redis | None, job_id: str, execution_id: str) -> None:
    await p.workers.send_stop_execution_command(resolve_connection(connection), job_id, execution_id)


async def suspend(connection: Redis | None = None, ttl: int | None = None) -> None:
    """What ``rq suspend`` does: workers stop taking jobs until :func:`resume` (or the ttl)."""
    await p.workers.suspend(resolve_connection(connection), ttl)


async def resume(connection: Redis | None = None) -> int:
    return await p.workers.resume(resolve_connection(connection))


async def is_suspended(connection: Redis | None = None) -> bool:
    return await p.workers.is_suspended(resolve_connection(connection))
