"""``aiorq info``: the lines and counts ``rq info`` prints, plus what an asyncio worker adds:
each worker's executions in flight (job, function, running for how long) and, for aiorq
workers, their concurrency (the ``concurrency`` field of the worker record).

It runs on an operator's machine against data anyone who can write rq's keys may have crafted,
so it never deserializes a job's ``data`` or ``meta``: a job is shown by rq's ``description``
text, and the registries' cleanup reads jobs with a serializer that refuses to load."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from shutil import get_terminal_size
from typing import Any

import click
from redis.asyncio import Redis
from rq.cli.helpers import get_scale, green, pad, state_symbol
from rq.utils import now

import aiorq
from aiorq import protocol as p
from aiorq.registry import clean_registries

# rq's description of a job it made: ``module.function(args…)`` (``get_call_string``).
_CALL = re.compile(r'([A-Za-z_][\w.]*)\(')


@dataclass
class Running:
    job_id: str
    execution_id: str
    func: str  # the function named by the description, else the description itself
    seconds: float


class NeverLoads:
    """A serializer whose ``loads`` refuses: rq's job restore then keeps an unreadable ``meta`` as
    its raw bytes (and writes them back unchanged) instead of running a pickle."""

    def __init__(self, serializer: Any) -> None:
        self.serializer = serializer

    def dumps(self, obj: Any) -> bytes:
        return bytes(self.serializer.dumps(obj))

    def loads(self, data: bytes) -> Any:
        raise ValueError('aiorq info does not deserialize job data')


def shown(description: str) -> str:
    """What names a job on screen: the function of rq's call string, else the description; any
    character that is not printable (a terminal escape in a crafted description) becomes ``?``."""
    m = _CALL.match(description)
    text = m.group(1) if m else description or '?'
    return ''.join(c if c.isprintable() else '?' for c in text)


@dataclass
class WorkerView:
    """One worker record as ``rq info`` reads it (``Worker.refresh``), and its executions."""

    name: str
    data: dict[str, str]
    running: list[Running] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.data.get('state', '?')

    @property
    def concurrency(self) -> int | None:
        value = self.data.get('concurrency')
        return int(value) if value else None

    @property
    def label(self) -> str:
        d = self.data
        pid = int(d['pid']) if d.get('pid') else None
        return f'{self.name} ({d.get("hostname") or None} {d.get("ip_address") or None} {pid})'

    @property
    def jobs(self) -> str:
        ok, failed = self.data.get('successful_job_count') or 0, self.data.get('failed_job_count') or 0
        return f'jobs: {int(ok)} finished, {int(failed)} failed'

    @property
    def queues(self) -> str:
        return ', '.join(self.data['queues'].split(',')) if self.data.get('queues') else ''


@dataclass
class Info:
    connection: Redis
    queue_class: type[aiorq.Queue]
    job_class: type[aiorq.Job]
    serializer: Any
    raw: bool = False
    by_queue: bool = False

    async def open_queues(self, names: Sequence[str]) -> list[aiorq.Queue]:
        """The named queues, else every queue; cleaned as ``rq info`` cleans them (registries,
        then the worker sets), reading the jobs it fails without loading them."""
        conn = self.connection
        kwargs: dict[str, Any] = {'job_class': self.job_class, 'serializer': NeverLoads(self.serializer)}
        if names:
            queues = [self.queue_class(name, connection=conn, **kwargs) for name in names]
        else:
            queues = await self.queue_class.all(connection=conn, **kwargs)
        for q in queues:
            await clean_registries(q)
            await p.maintenance.clean_worker_registry(conn, q.name)
        return queues

    async def show_queues(self, queues: list[aiorq.Queue]) -> None:
        chartwidth = min(20, get_terminal_size().columns - 20)
        counts = [await q.count for q in queues]
        ratio = chartwidth * 1.0 / get_scale(max(counts, default=0))
        for q, count in zip(queues, counts):
            registries = (
                f'{await q.started_job_registry.count} executing, {await q.finished_job_registry.count} finished, '
                f'{await q.failed_job_registry.count} failed'
            )
            if self.raw:
                click.echo(f'queue {q.name} {count}, {registries}')
            else:
                chart = green('|' + '█' * int(ratio * count))
                click.echo(f'{q.name:<12} {chart} {count}, {registries}')
        if not self.raw:
            click.echo(f'{len(queues)} queues, {sum(counts)} jobs total')

    async def workers_of(self, queue_name: str | None) -> list[WorkerView]:
        return [WorkerView(n, d) for n, d in await p.workers.all_workers(self.connection, queue_name)]

    async def show_workers(self, queues: list[aiorq.Queue]) -> None:
        """rq's rule: the workers of the shown queues (all workers when there is no queue)."""
        found: dict[str, WorkerView] = {}
        names: list[str | None] = [q.name for q in queues] or [None]
        for name in names:
            for w in await self.workers_of(name):
                found.setdefault(w.name, w)
        workers = sorted(found.values(), key=lambda w: w.name)
        if self.by_queue:
            await self.show_by_queue(queues)
        else:
            for w in workers:
                w.running = await self.running(w.name)
                self.show_worker(w)
        if not self.raw:
            click.echo(f'{len(workers)} workers, {len(queues)} queues')

    def show_worker(self, w: WorkerView) -> None:
        if self.raw:
            click.echo(f'worker {w.label} {w.state} {w.queues}. {w.jobs}')
            if w.concurrency is not None:
                click.echo(f'concurrency {w.name} {w.concurrency}')
            for r in w.running:
                func = r.func.replace(' ', '_')  # one field per word, as the line's readers split it
                click.echo(f'execution {w.name} {r.job_id} {r.execution_id} {func} {r.seconds:.1f}')
            return
        click.echo(f'{w.label}: {state_symbol(w.state)} {w.queues}. {w.jobs}')
        if w.concurrency is not None:
            click.echo(f'    concurrency {w.concurrency}, {len(w.running)} in flight')
        for r in w.running:
            click.echo(f'    {r.job_id}: {r.func}, running for {_duration(r.seconds)}')

    async def show_by_queue(self, queues: list[aiorq.Queue]) -> None:
        width = max((len(q.name) for q in queues), default=0)
        for q in queues:
            names = sorted(f'{w.name} ({state_symbol(w.state)})' for w in await self.workers_of(q.name))
            click.echo('{} {}'.format(pad(q.name + ':', width + 1), ', '.join(names) if names else '–'))

    async def running(self, worker_name: str) -> list[Running]:
        """The worker's executions, oldest first; one whose job is gone has just ended."""
        found = []
        stamp = now()
        executions = await p.workers.current_executions(self.connection, worker_name)
        descriptions = await p.jobs.descriptions(self.connection, [ex.job_id for ex in executions])
        for ex, description in zip(executions, descriptions):
            if description is not None:
                found.append(Running(ex.job_id, ex.id, shown(description), (stamp - ex.created_at).total_seconds()))
        return sorted(found, key=lambda r: -r.seconds)

    async def show(self, queues: list[aiorq.Queue], only_queues: bool, only_workers: bool) -> None:
        if not only_workers:
            await self.show_queues(queues)
        if only_queues:
            return
        if not only_workers and not self.raw:
            click.echo('')
        await self.show_workers(queues)
        if not only_workers and not self.raw:
            click.echo('')
            click.echo(f'Updated: {datetime.datetime.now()}')

    async def run(self, names: Sequence[str], interval: float | None, only_queues: bool, only_workers: bool) -> None:
        queues = await self.open_queues(names)
        while True:
            if interval:
                click.clear()
            await self.show(queues, only_queues, only_workers)
            if not interval:
                return
            await asyncio.sleep(interval)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f'{seconds:.1f}s'
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f'{minutes}m{secs:02d}s'
    return f'{minutes // 60}h{minutes % 60:02d}m'
