"""Queue names whose list key would be one of rq's own keys under ``rq:queue:`` (a queue
``x:intermediate`` is queue ``x``'s intermediate list, whose ids rq's maintenance fails as stuck)
are refused at enqueue, by every enqueue path, before anything is written. Stock rq accepts them:
a deliberate difference (docs/differences.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
import redis
import rq
import tasks
from redis.asyncio import Redis
from rq.utils import now

from aiorq import Group, Queue, job

# Each reserved name, why, and a name near it that is a plain queue.
RESERVED = [
    ('x:intermediate', "its key rq:queue:x:intermediate is rq's intermediate list of queue 'x'", 'x:intermediates'),
    (':intermediate', "its key rq:queue::intermediate is rq's intermediate list of queue ''", 'intermediate'),
    (
        'x:intermediate:first_seen:0d44e6f1',
        "its key rq:queue:x:intermediate:first_seen:0d44e6f1 has the shape of rq's stuck-job marker of queue 'x'",
        'x:intermediate:y',
    ),
    (
        '_compact:6f1c',
        "its key rq:queue:_compact:6f1c has the shape of rq's temporary list for compacting a queue",
        'a_compact:1',
    ),
]


def paths(q: Queue) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every way to put a job on ``q``."""
    delayed = job(q)(tasks.add)
    by_name = job(q.name, connection=q.connection)(tasks.add)
    return {
        'enqueue': lambda: q.enqueue(tasks.add, 1, 2),
        'enqueue_call': lambda: q.enqueue_call(tasks.add, args=(1, 2)),
        'enqueue_job': lambda: q.enqueue_job(Queue('ok', connection=q.connection).create_job(tasks.add, (1, 2))),
        'enqueue_many': lambda: q.enqueue_many([Queue.prepare_data(tasks.add, (1, 2))]),
        'group': lambda: Group.create(q.connection).enqueue_many(q, [Queue.prepare_data(tasks.add, (1, 2))]),
        'enqueue_at': lambda: q.enqueue_at(now() + timedelta(minutes=5), tasks.add, 1, 2),
        'enqueue_in': lambda: q.enqueue_in(timedelta(minutes=5), tasks.add, 1, 2),
        'schedule_job': lambda: q.schedule_job(
            Queue('ok', connection=q.connection).create_job(tasks.add, (1, 2)), now() + timedelta(minutes=5)
        ),
        'unique': lambda: q.enqueue(tasks.add, 1, 2, job_id=f'once-{uuid4().hex}', unique=True),
        'depends_on': lambda: q.enqueue(tasks.add, 1, 2, depends_on='parent'),
        '@job delay': lambda: delayed.delay(1, 2),  # type: ignore[attr-defined]
        '@job by name': lambda: by_name.delay(1, 2),  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize('name, why, near', RESERVED)
async def test_reserved_names_are_refused_by_every_enqueue_path(
    name: str, why: str, near: str, conn: Redis, sync_conn: redis.Redis
) -> None:
    q = Queue(name, connection=conn)
    for path, enqueue in paths(q).items():
        with pytest.raises(ValueError) as refused:
            await enqueue()
        assert str(refused.value) == f'Queue name {name!r} is reserved: {why}', path
        assert sync_conn.keys('*') == [], path  # nothing written
    # Reading such a queue still works (its keys may exist, written by stock rq).
    assert await q.count == 0 and await q.get_job_ids() == []

    # A name near the shape is a plain queue, on every path.
    plain = Queue(near, connection=conn)
    for enqueue in paths(plain).values():
        await enqueue()
    assert await plain.count == 9  # a missing dependency does not defer, as in rq
    assert await plain.scheduled_job_registry.count == 3

    # Stock rq accepts the name (the deliberate difference) and writes onto rq's own key.
    job = rq.Queue(name, connection=sync_conn).enqueue(tasks.add, 1, 2)
    assert sync_conn.lrange(f'rq:queue:{name}', 0, -1) == [job.id.encode()]
