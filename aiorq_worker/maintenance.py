"""Maintenance at start-up and every ``maintenance_interval``, under rq's locks (shared with the
client through the protocol layer): abandoned executions, registries, worker sets, the
intermediate list, groups."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import AbandonedJobError
from rq.job import Job as RQJob

import aiorq
from aiorq.protocol import execution as px
from aiorq.protocol import maintenance

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger('aiorq.worker')


class Maintenance:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._last_run = 0.0

    async def maybe_run(self) -> None:
        if time.monotonic() - self._last_run < self.worker.maintenance_interval and self._last_run:
            return
        self._last_run = time.monotonic()
        for queue_name in self.worker.queue_names:
            try:
                await maintenance.maintain_queue(
                    self.worker.connection,
                    queue_name,
                    serializer=self.worker.serializer,
                    on_abandoned=self._abandoned,
                    on_stuck=self._stuck,
                )
            except (RedisConnectionError, RedisTimeoutError):
                raise
            except Exception:
                logger.exception('Worker %s: maintenance of %s failed', self.worker.name, queue_name)
        try:
            await maintenance.clean_groups(self.worker.connection, self.worker.maintenance_interval)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception:
            logger.exception('Worker %s: group maintenance failed', self.worker.name)

    async def _abandoned(self, job: RQJob) -> None:
        cb = job.failure_callback
        args = (AbandonedJobError, AbandonedJobError(), None)
        if cb is not None:
            await self.worker.runner.callback(job, cb, job.failure_callback_timeout, *args)
        self.worker.handle_exception(job, args)

    async def _stuck(self, queue_name: str, job_id: str) -> None:
        try:
            job = await aiorq.protocol.jobs.fetch(self.worker.connection, job_id, self.worker.serializer)
        except Exception:
            return
        await px.finish_failure(
            self.worker.connection, self.worker.name, job, None, 'Job was stuck in intermediate queue.'
        )
