"""The only code in aiorq that speaks Redis.

One ``async def`` per transition of rq 3.0's protocol, each taking a ``redis.asyncio.Redis``
and plain values (rq's own pure objects used as codecs), issuing the keys and command
sequences stock rq issues with at least its atomicity. ``Queue``, ``Job``, the registries
and the worker call into it; nothing else builds an ``rq:`` key.
"""

from rq.exceptions import NoSuchJobError

from . import (
    codec,
    cron,
    defaults,
    dependents,
    dequeue,
    enqueue,
    finish,
    groups,
    jobs,
    keys,
    maintenance,
    outcomes,
    queues,
    ratelimit,
    reads,
    registries,
    scheduler,
    scripts,
    wire,
    workers,
)

__all__ = [
    'NoSuchJobError',
    'codec',
    'cron',
    'defaults',
    'dependents',
    'dequeue',
    'enqueue',
    'finish',
    'groups',
    'jobs',
    'keys',
    'maintenance',
    'outcomes',
    'queues',
    'ratelimit',
    'reads',
    'registries',
    'scheduler',
    'scripts',
    'wire',
    'workers',
]
