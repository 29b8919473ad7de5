"""Reading the registered workers (what ``rq.Worker.all``/``Worker.count`` give), sending them
commands, and suspending them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from rq.exceptions import InvalidJobOperation
from rq.executions import Execution
from rq.serializers import resolve_serializer
from rq.utils import utcparse
from rq.version import VERSION as RQ_VERSION

from . import protocol as p
from ._awaitable import AwaitableProperty
from .connections import current_connection_or_none, resolve_connection
from .job import Job, checked_job_class

if TYPE_CHECKING:
    from .queue import Queue

__all__ = [
    'Worker',
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


def _queue_name(queue: Queue | str | None) -> str | None:
    return queue if isinstance(queue, str) or queue is None else queue.name


def _queue_connection(connection: Redis | None, queue: Queue | str | None) -> Redis:
    """rq takes the connection from ``queue`` when one is given."""
    if queue is not None and not isinstance(queue, str):
        return queue.connection
    return resolve_connection(connection)


class Worker:
    """rq's ``Worker`` as other processes see it: ``await Worker.all()``, ``await Worker.find_by_key()``
    and the registered worker's attributes, read as ``rq.Worker.refresh`` reads them.

    Read-only: the worker that runs jobs is ``aiorq_worker.Worker``.
    """

    redis_worker_namespace_prefix = p.keys.WORKER_PREFIX
    redis_workers_keys = p.keys.WORKERS

    def __init__(
        self,
        queues: Any = (),
        name: str | None = None,
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        serializer: Any = None,
    ) -> None:
        from .queue import Queue

        if name is None:
            raise ValueError(
                'aiorq.Worker reads a registered worker and needs its name; run a worker with aiorq_worker.Worker'
            )
        self.name = name
        self._connection = connection if connection is not None else current_connection_or_none()
        if queue_class is not None and not (isinstance(queue_class, type) and issubclass(queue_class, Queue)):
            raise TypeError(f'queue_class={queue_class!r} is not an aiorq.Queue subclass: subclass aiorq.Queue instead')
        self.job_class: type[Job] = checked_job_class(job_class)
        self.queue_class: type[Queue] = queue_class or Queue
        self.serializer = resolve_serializer(serializer)
        if isinstance(queues, (str, Queue)):
            queues = [queues]
        self.queues: list[Queue] = [self._queue(q) if isinstance(q, str) else q for q in queues]
        self.hostname: str | None = None
        self.ip_address: str | None = None
        self.pid: int | None = None
        self.version: str = RQ_VERSION
        self.python_version: str | None = None
        self.birth_date: datetime | None = None
        self.last_heartbeat: datetime | None = None
        self.successful_job_count = 0
        self.failed_job_count = 0
        self.total_working_time: float = 0
        self._state = '?'
        self._executions: list[Execution] = []

    def _queue(self, name: str) -> Queue:
        return self.queue_class(name, connection=self._connection, job_class=self.job_class, serializer=self.serializer)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name!r})'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Worker) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def connection(self) -> Redis:
        return resolve_connection(self._connection)

    @property
    def key(self) -> str:
        return p.keys.worker(self.name)

    @property
    def pubsub_channel_name(self) -> str:
        return p.keys.pubsub_channel(self.name)

    @property
    def executions_key(self) -> str:
        return p.keys.worker_executions(self.name)

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def queue_keys(self) -> list[str]:
        return [q.key for q in self.queues]

    def get_state(self) -> str:
        """The state read by the last refresh (``busy``, ``idle``, ``suspended``…)."""
        return self._state

    @property
    def state(self) -> str:
        return self._state

    # -- discovery -------------------------------------------------------------------------

    @classmethod
    async def find_by_key(
        cls,
        worker_key: str,
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        serializer: Any = None,
    ) -> Worker | None:
        """The worker registered under ``worker_key`` (``None``, and dropped from ``rq:workers``,
        if its hash expired); ``ValueError`` for a key outside rq's worker namespace, as in rq."""
        if not worker_key.startswith(cls.redis_worker_namespace_prefix):
            raise ValueError(f'Not a valid RQ worker key: {worker_key}')
        conn = resolve_connection(connection)
        data = await p.workers.find_worker(conn, worker_key)
        if data is None:
            return None
        worker = cls(
            name=worker_key[len(cls.redis_worker_namespace_prefix) :],
            connection=conn,
            job_class=job_class,
            queue_class=queue_class,
            serializer=serializer,
        )
        worker._restore(data)
        return worker

    @classmethod
    async def all(
        cls,
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        queue: Queue | str | None = None,
        serializer: Any = None,
    ) -> list[Worker]:
        """Every registered worker (of ``queue`` when given), sorted by name."""
        conn = _queue_connection(connection, queue)
        found = []
        for key in await cls.all_keys(conn, queue):
            worker = await cls.find_by_key(
                key, connection=conn, job_class=job_class, queue_class=queue_class, serializer=serializer
            )
            if worker is not None:
                found.append(worker)
        return found

    @classmethod
    async def all_keys(cls, connection: Redis | None = None, queue: Queue | str | None = None) -> list[str]:
        return await p.workers.worker_keys(_queue_connection(connection, queue), _queue_name(queue))

    @classmethod
    async def count(cls, connection: Redis | None = None, queue: Queue | str | None = None) -> int:
        return await p.workers.count_workers(_queue_connection(connection, queue), _queue_name(queue))

    # -- reading one worker ------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the worker's hash (nothing changes if it is gone, as in rq)."""
        data = await p.workers.worker_hash(self.connection, self.name)
        if data:
            self._restore(data)

    def _restore(self, data: dict[str, str]) -> None:
        """``rq.Worker.refresh``'s decoding, field for field."""

        def date(k: str) -> datetime | None:
            return utcparse(data[k]) if data.get(k) else None

        self.hostname = data.get('hostname') or None
        self.ip_address = data.get('ip_address') or None
        self.pid = int(data['pid']) if data.get('pid') else None
        self.version = data.get('version') or RQ_VERSION
        self.python_version = data.get('python_version') or None
        self._state = data.get('state', '?')
        self.last_heartbeat = date('last_heartbeat')
        self.birth_date = date('birth')
        self.failed_job_count = int(data.get('failed_job_count') or 0)
        self.successful_job_count = int(data.get('successful_job_count') or 0)
        self.total_working_time = float(data.get('total_working_time') or 0)
        if data.get('queues'):
            self.queues = [self._queue(q) for q in data['queues'].split(',')]

    async def get_current_executions(self, refresh: bool = False) -> list[Execution]:
        """The worker's executions in flight, from its executions index (cached unless ``refresh``)."""
        if not refresh and self._executions:
            return self._executions
        self._executions = await p.workers.current_executions(self.connection, self.name)
        return self._executions

    @property
    def execution(self) -> AwaitableProperty[Execution | None]:
        async def read() -> Execution | None:
            executions = await self.get_current_executions()
            return executions[0] if executions else None

        return AwaitableProperty(read, 'worker.execution')

    @property
    def current_execution_count(self) -> AwaitableProperty[int]:
        return AwaitableProperty(
            lambda: p.workers.current_execution_count(self.connection, self.name), 'worker.current_execution_count'
        )

    async def get_current_job_id(self) -> str | None:
        execution = await self.execution
        return execution.job_id if execution else None

    async def get_current_job(self) -> Job | None:
        """The job of one of the worker's executions, ``None`` when idle."""
        job_id = await self.get_current_job_id()
        if job_id is None:
            return None
        return await self.job_class.fetch(job_id, self.connection, self.serializer)

    def _date_field(self, field_name: str, label: str) -> AwaitableProperty[datetime | None]:
        async def read() -> datetime | None:
            value = await p.workers.worker_field(self.connection, self.name, field_name)
            return None if value is None else utcparse(value)

        return AwaitableProperty(read, label)

    @property
    def death_date(self) -> AwaitableProperty[datetime | None]:
        return self._date_field('death', 'worker.death_date')

    @property
    def shutdown_requested_date(self) -> AwaitableProperty[datetime | None]:
        return self._date_field('shutdown_requested_date', 'worker.shutdown_requested_date')


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


async def send_stop_job_command(connection: Redis | None, job_id: str, serializer: Any = None) -> None:
    """Ask the worker running ``job_id`` to stop it: ``NoSuchJobError`` if there is no such job,
    ``InvalidJobOperation`` if no worker runs it (rq fetches the job, so ``serializer`` is its)."""
    conn = resolve_connection(connection)
    job = await Job.fetch(job_id, connection=conn, serializer=serializer)
    if not job.worker_name:
        raise InvalidJobOperation('Job is not currently executing')
    await send_command(conn, job.worker_name, 'stop-job', job_id=job_id)


async def send_stop_execution_command(connection: Redis | None, job_id: str, execution_id: str) -> None:
    await p.workers.send_stop_execution_command(resolve_connection(connection), job_id, execution_id)


async def suspend(connection: Redis | None = None, ttl: int | None = None) -> None:
    """What ``rq suspend`` does: workers stop taking jobs until :func:`resume` (or the ttl)."""
    await p.workers.suspend(resolve_connection(connection), ttl)


async def resume(connection: Redis | None = None) -> int:
    return await p.workers.resume(resolve_connection(connection))


async def is_suspended(connection: Redis | None = None, worker: Any = None) -> bool:
    """Whether workers are suspended; given a running ``worker`` (one with ``name`` and
    ``worker_ttl``, as ``aiorq_worker.Worker``), heartbeat it in the same MULTI, as rq does."""
    conn = resolve_connection(connection)
    if worker is None:
        return await p.workers.is_suspended(conn)
    ttl = worker.worker_ttl + p.defaults.HEARTBEAT_SLACK
    return await p.workers.heartbeat_and_check_suspended(conn, worker.name, ttl)
