"""Cron for aiorq: rq 3.0's cron config files, run from asyncio (``aiorq cron``, ``aiorq worker --cron``).

The config is rq's own (``from rq import cron; cron.register(...)``), imported the way ``rq cron``
imports it; rq's ``CronJob`` computes every next time (local time, DST). What reaches Redis is
what ``rq cron`` writes (rq-protocol §8), through :mod:`aiorq.protocol.cron`, whose guarded
enqueue lets any number of runners share one config without enqueueing a tick twice.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import math
import os
import socket
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import rq.cron as rq_cron
from redis.asyncio import Redis
from rq.cron import CronJob
from rq.utils import normalize_config_path, validate_absolute_path
from rq.utils import now as utcnow

from aiorq.protocol import cron as pc
from aiorq.queue import check_importable

__all__ = ['CronConfigError', 'CronRunner', 'Enqueued', 'load_config']

LOGGER = logging.getLogger('aiorq.cron')

MAX_SLEEP = 60.0  # rq's cap on the sleep between rounds
RETRY_DELAYS = (1.0, 5.0, 30.0, 60.0)  # after a failed enqueue of one cron job, by consecutive failures
# ``load_config_from_file`` names a config loaded by absolute path like this; functions defined
# in that file carry the name as their module, which no worker can import.
PATH_CONFIG_MODULE = 'rq_cron_config_'


class CronConfigError(Exception):
    """A cron config that cannot be used; ``str()`` is one line that says why."""


class Enqueued(NamedTuple):
    """One job a round enqueued."""

    cron_job: CronJob
    job_id: str


def _import_config(config: str) -> None:
    """Import ``config`` as ``CronScheduler.load_config_from_file`` does (a file path or a
    dotted module name; a module imported before is reloaded so it registers again)."""
    if os.path.isabs(config):
        try:
            validate_absolute_path(config)
        except OSError as e:
            raise CronConfigError(str(e)) from e
        module_name = f'{PATH_CONFIG_MODULE}{os.path.basename(config).replace(".", "_")}'
        spec = importlib.util.spec_from_file_location(module_name, config)
        if spec is None or spec.loader is None:
            raise CronConfigError(f"cannot load '{config}' as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise CronConfigError(f"cannot load cron config '{config}': {type(e).__name__}: {e}") from e
        return
    dotted = normalize_config_path(config)
    try:
        if dotted in sys.modules:
            importlib.reload(sys.modules[dotted])
        else:
            importlib.import_module(dotted)
    except Exception as e:
        raise CronConfigError(f"cannot import cron config '{dotted}' (from '{config}'): {type(e).__name__}: {e}") from e


def _label(data: dict[str, Any]) -> str:
    func = data.get('func')
    return data.get('name') or f'{getattr(func, "__module__", "?")}.{getattr(func, "__name__", repr(func))}'


def load_config(config: str) -> list[CronJob]:
    """The cron jobs ``config`` registers with ``rq.cron.register``, validated by rq's ``CronJob``
    (interval xor cron, the cron expression) and checked importable and serializable here, so a
    bad config fails at start-up instead of at its first tick."""
    rq_cron._job_data_registry = []  # what rq's loader does before importing
    try:
        _import_config(config)
        definitions = list(rq_cron._job_data_registry)
    finally:
        rq_cron._job_data_registry = []
    jobs: list[CronJob] = []
    for data in definitions:
        where = f"cron job {_label(data)} in '{config}'"
        try:
            cron_job = CronJob(**data)
        except Exception as e:
            raise CronConfigError(f'{where}: {e}') from e
        if cron_job.func_name.startswith(PATH_CONFIG_MODULE):
            raise CronConfigError(
                f'{where}: the function is defined in the config file, which workers cannot import; '
                'move it to an importable module'
            )
        try:
            check_importable(cron_job.func)
            pc.build_job(cron_job)
        except Exception as e:
            raise CronConfigError(f'{where}: {e}') from e
        jobs.append(cron_job)
    return jobs


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


@dataclass
class _Entry:
    """A registered cron job and what this runner keeps about it besides rq's ``CronJob``."""

    cron_job: CronJob
    # Several registrations share this name: their enqueues cannot be told apart in rq's data.
    shared: bool = False
    failures: int = 0
    retry_at: datetime | None = None

    @property
    def grid(self) -> bool:
        """An interval job sharing its name runs on multiples of its interval since the epoch."""
        return self.shared and not self.cron_job.cron

    def due(self, moment: datetime) -> bool:
        """``CronJob.should_run`` at ``moment`` (rq's reads the clock), after any retry delay."""
        if self.retry_at is not None and moment < self.retry_at:
            return False
        cj = self.cron_job
        if not cj.latest_enqueue_time and not cj.cron and not self.grid:
            return True
        return cj.next_enqueue_time is not None and moment >= cj.next_enqueue_time

    def before(self, moment: datetime) -> float:
        """The guard: enqueue only if the name's last recorded enqueue is earlier than this.

        A cron time and a grid slot are absolute, so every runner guards the same tick. A
        chained interval job (rq's: next = last enqueue + interval) is also held to "at least
        ``interval`` seconds since the name's last enqueue, by anyone", which needs no agreement
        on ticks (stock ``rq cron`` writers keep their own chain).
        """
        cj = self.cron_job
        if cj.cron or self.grid:
            assert cj.next_enqueue_time is not None
            return _ts(cj.next_enqueue_time)
        assert cj.interval
        bound = math.nextafter(_ts(moment) - cj.interval, math.inf)  # last <= moment - interval
        if cj.latest_enqueue_time is not None:
            bound = min(bound, _ts(cj.latest_enqueue_time) + cj.interval)
        return bound

    def next_slot(self, moment: datetime) -> datetime:
        assert self.cron_job.interval
        interval = self.cron_job.interval
        return _utc((math.floor(_ts(moment) / interval) + 1) * interval)

    def enqueued(self, moment: datetime, stamp: float) -> None:
        """This runner enqueued at ``stamp`` (the score it wrote) in the round at ``moment``."""
        cj = self.cron_job
        self.failures, self.retry_at = 0, None
        if self.grid:
            cj.latest_enqueue_time, cj.next_enqueue_time = _utc(stamp), self.next_slot(moment)
        elif cj.cron:
            cj.set_enqueue_time(moment)  # rq: the round's time; the next cron time follows it
        else:
            # The written score, not the round's time: other runners take their chain from it.
            cj.set_enqueue_time(_utc(stamp))

    def skipped(self, moment: datetime, last: float) -> None:
        """Another writer recorded this tick (the name's last enqueue is ``last``): follow it."""
        cj = self.cron_job
        self.failures, self.retry_at = 0, None
        if self.grid:
            cj.latest_enqueue_time, cj.next_enqueue_time = _utc(last), self.next_slot(moment)
        elif cj.cron:
            cj.set_enqueue_time(max(moment, _utc(last)))
        else:
            cj.set_enqueue_time(_utc(last))

    def failed(self, moment: datetime) -> float:
        delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
        self.failures += 1
        self.retry_at = moment + timedelta(seconds=delay)
        return delay


class CronRunner:
    """Enqueues the cron jobs of an rq cron config on a ``redis.asyncio.Redis``.

    ``run(stop)`` is the whole life: load, birth, then rounds (enqueue what is due, heartbeat,
    sleep until the next due time, at most 60 s, or until ``stop`` is set), death. The other
    methods are its steps, public so a host or a test can drive them (``tick(now=...)``).
    """

    def __init__(
        self,
        connection: Redis,
        config: str,
        *,
        name: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.connection = connection
        self.config = config
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f'{self.hostname}:{self.pid}:{uuid.uuid4().hex[:6]}'  # rq's naming
        self.created_at = utcnow()
        self.log = logger or LOGGER
        self._entries: list[_Entry] | None = None

    @property
    def cron_jobs(self) -> list[CronJob]:
        return [e.cron_job for e in self._loaded()]

    def load(self) -> list[CronJob]:
        """Import the config (again, if called again); raises :class:`CronConfigError`."""
        jobs = load_config(self.config)
        counts = Counter(cj.name for cj in jobs)
        self._entries = [_Entry(cj, shared=counts[cj.name] > 1) for cj in jobs]
        moment = utcnow()
        for entry in self._entries:
            cj = entry.cron_job
            if entry.grid:
                assert cj.interval
                cj.next_enqueue_time = entry.next_slot(moment) - timedelta(seconds=cj.interval)  # this slot
            if cj.interval:
                self.log.info("Registered '%s' to run on %s every %s seconds", cj.func_name, cj.queue_name, cj.interval)
            else:
                self.log.info(
                    "Registered '%s' to run on %s with cron schedule '%s'", cj.func_name, cj.queue_name, cj.cron
                )
        for name in sorted(n for n, c in counts.items() if c > 1):
            self.log.info(
                "Cron job name '%s' is shared by %d registrations: its interval jobs run on multiples "
                'of their interval since the epoch (see docs/cron.md)',
                name,
                counts[name],
            )
        if not jobs:
            self.log.warning("No cron jobs registered in '%s'", self.config)
        else:
            self.log.info("Successfully registered %d cron jobs from '%s'", len(jobs), self.config)
        return self.cron_jobs

    def _loaded(self) -> list[_Entry]:
        if self._entries is None:
            self.load()
        assert self._entries is not None
        return self._entries

    def record(self) -> dict[str, str]:
        """The fields of this runner's ``rq:cron_scheduler:<name>`` hash."""
        return pc.scheduler_record(self.name, self.hostname, self.pid, self.created_at, self.config, self.cron_jobs)

    async def start(self) -> None:
        """Load if needed, take each job's schedule from what the fleet recorded, register birth.

        A chained interval job whose name was enqueued before (by anyone) runs next at that
        enqueue + interval, not at once as after a stock ``rq cron`` start: a restart or a
        second runner is not a new tick.
        """
        chained = [e.cron_job for e in self._loaded() if e.cron_job.interval and not e.grid]
        last = await pc.last_enqueues(self.connection, sorted({cj.name for cj in chained}))
        for cj in chained:
            stamp = last.get(cj.name)
            if stamp is not None:
                cj.set_enqueue_time(_utc(stamp))
        self.log.info('CronScheduler %s: registering birth...', self.name)
        await pc.register_birth(self.connection, self.name, self.record())

    async def tick(self, now: datetime | None = None) -> list[Enqueued]:
        """Enqueue every cron job due at ``now`` (default: the clock), each only if no runner has
        enqueued its tick yet; re-save the record when something was enqueued, as rq does (or
        skipped: the record then shows the schedule this runner follows).
        A cron job whose enqueue fails is logged and retried later; the others go on."""
        moment = now or utcnow()
        due: dict[str, list[_Entry]] = {}
        for entry in self._loaded():
            if entry.due(moment):
                due.setdefault(entry.cron_job.name, []).append(entry)
        done: list[Enqueued] = []
        skipped = False
        for name, entries in due.items():
            try:
                items = [(pc.build_job(e.cron_job), e.cron_job.queue_name, e.before(moment)) for e in entries]
                jobs, last = await pc.enqueue_due(self.connection, name, items)
            except Exception as e:
                delay = max(entry.failed(moment) for entry in entries)
                self.log.error(
                    'Could not enqueue cron job %s (retrying in %g s): %s: %s',
                    name,
                    delay,
                    type(e).__name__,
                    e,
                    exc_info=self.log.isEnabledFor(logging.DEBUG),
                )
                continue
            enqueued_ids = {job.id for job in jobs}
            for entry, (job, _, _) in zip(entries, items):
                cj = entry.cron_job
                if job.id in enqueued_ids:
                    assert last is not None
                    entry.enqueued(moment, last)
                    done.append(Enqueued(cj, job.id))
                    self.log.info(
                        'Enqueued job %s to queue %s', getattr(cj.func, '__name__', cj.func_name), cj.queue_name
                    )
                else:
                    assert last is not None
                    entry.skipped(moment, last)
                    skipped = True
                    self.log.debug('Cron job %s: this tick was already enqueued at %s', name, _utc(last))
        if done or skipped:
            await pc.save(self.connection, self.name, self.record())
        return done

    async def heartbeat(self) -> None:
        """Refresh the registry score and the record's TTL, re-creating the record if it expired."""
        added, alive = await pc.heartbeat(self.connection, self.name)
        if not alive:
            await pc.save(self.connection, self.name, self.record())
        if added:
            self.log.info('CronScheduler %s: re-registered in scheduler registry', self.name)

    def sleep_interval(self, now: datetime | None = None) -> float:
        """Seconds until the next due time (a retry counts), between 0 and 60."""
        moment = now or utcnow()
        times = []
        for entry in self._loaded():
            if entry.retry_at is not None:
                times.append(max(entry.retry_at, entry.cron_job.next_enqueue_time or entry.retry_at))
            elif entry.cron_job.next_enqueue_time is not None:
                times.append(entry.cron_job.next_enqueue_time)
            elif not entry.cron_job.latest_enqueue_time:
                return 0.0
        if not times:
            return MAX_SLEEP
        return min(max((min(times) - moment).total_seconds(), 0.0), MAX_SLEEP)

    async def shutdown(self) -> None:
        """Register death (``ZREM`` from the registry; the record expires by itself)."""
        self.log.info('CronScheduler %s: registering death...', self.name)
        if not await pc.register_death(self.connection, self.name):
            self.log.warning("CronScheduler '%s' not found in registry", self.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Birth, rounds until ``stop`` is set, death (also when cancelled). A failing Redis is
        logged and retried; only a bad config (:class:`CronConfigError`) or a failed birth raise."""
        self.log.info('CronScheduler %s: starting...', self.name)
        await self.start()
        try:
            while not stop.is_set():
                for step in (self.tick, self.heartbeat):
                    try:
                        await step()
                    except Exception as e:
                        self.log.error(
                            'CronScheduler %s: %s failed: %s: %s',
                            self.name,
                            step.__name__,
                            type(e).__name__,
                            e,
                            exc_info=self.log.isEnabledFor(logging.DEBUG),
                        )
                delay = self.sleep_interval()
                try:
                    await asyncio.wait_for(stop.wait(), delay if delay > 0 else 0.001)
                except asyncio.TimeoutError:
                    pass
        finally:
            try:
                await self.shutdown()
            except Exception as e:
                self.log.error('CronScheduler %s: could not register death: %s', self.name, e)
            self.log.info('CronScheduler %s: shutdown complete', self.name)
