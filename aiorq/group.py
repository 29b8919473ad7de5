"""``aiorq.Group``: rq 3.0's ``Group`` (jobs tracked under one name), every Redis call awaited."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from redis.asyncio import Redis
from rq.exceptions import NoSuchGroupError
from rq.queue import EnqueueData

from . import protocol as p
from .job import Job

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ['Group', 'NoSuchGroupError']


class Group:
    """A container for tracking several jobs under one identifier (``rq:group:<name>``)."""

    REDIS_GROUP_NAME_PREFIX = p.keys.GROUP_PREFIX
    REDIS_GROUP_KEY = p.keys.GROUPS
    REDIS_GROUP_CLEANING_KEY = p.keys.CLEAN_GROUPS

    def __init__(self, connection: Redis, name: str | None = None) -> None:
        self.name = name if name else uuid4().hex
        self.connection = connection
        self.key = self.get_key(self.name)

    def __repr__(self) -> str:
        return f'Group(id={self.name})'

    async def enqueue_many(self, queue: Queue, job_datas: Iterable[EnqueueData], pipeline: Any = None) -> list[Job]:
        """Enqueue the jobs with this ``group_id`` and add them to the group in the same MULTI.

        A caller-supplied pipeline is executed here, as rq does.
        """
        jobs: list[Job] = []

        async def buffer_jobs(pipe: Any) -> Sequence[str]:
            jobs.extend(await queue.enqueue_many(job_datas, pipeline=pipe, group_id=self.name))
            return [job.id for job in jobs]

        await p.groups.enqueue_many(self.connection, self.name, buffer_jobs, pipeline)
        return jobs

    async def cleanup(self) -> None:
        """Drop the members whose job expired or was deleted."""
        await p.maintenance.clean_group(self.connection, self.name)

    async def get_jobs(self) -> list[Job]:
        """The member jobs that still exist (after :meth:`cleanup`, as in rq)."""
        await self.cleanup()
        job_ids = await p.groups.job_ids(self.connection, self.name)
        return [job for job in await Job.fetch_many(job_ids, self.connection) if job is not None]

    async def delete_job(self, job_id: str, pipeline: Any = None) -> None:
        """Remove one id from the group (the job itself stays)."""
        await p.groups.remove_job(self.connection, self.name, job_id, pipeline)

    @classmethod
    def create(cls, connection: Redis, name: str | None = None) -> Group:
        return cls(name=name, connection=connection)

    @classmethod
    async def fetch(cls, name: str, connection: Redis) -> Group:
        """An existing group; ``NoSuchGroupError`` (rq's) when its set does not exist."""
        if not await p.groups.exists(connection, name):
            raise NoSuchGroupError
        return cls(name=name, connection=connection)

    @classmethod
    async def all(cls, connection: Redis) -> list[Group]:
        """Every group; names whose set is gone are removed from ``rq:groups`` on the way, as in rq."""
        return [cls(name=name, connection=connection) for name in await p.groups.live_names(connection)]

    @classmethod
    def get_key(cls, name: str) -> str:
        """The Redis key of the set holding a group's job ids."""
        return p.keys.group(name)

    @classmethod
    async def acquire_maintenance_lock(cls, connection: Redis, timeout: int) -> bool:
        """The lock to clean all groups; never released, it expires after ``timeout`` seconds."""
        return await p.groups.acquire_maintenance_lock(connection, timeout)

    @classmethod
    async def clean_registries(cls, connection: Redis) -> None:
        """Forget deleted groups and drop expired members from the others (no lock taken, as in rq)."""
        await p.maintenance.clean_all_groups(connection)
