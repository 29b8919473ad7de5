"""The lean enqueue: rq's job for a plain call, and the fields its enqueue writes, without
``Queue.create_job``/``Job.create`` and without ``to_dict()`` (the client's share of the lean
codec, see :mod:`aiorq.protocol.lean`).

**The rule** (:func:`plain_options`): a call is created here unless it has dependencies, a
retry, a repeat, a callback (success, failure or stopped), webhooks or a rate limit (any of
them given, even falsy); such a call takes rq's ``create_job``. Everything else (timeouts and
ttls in any form rq parses, description, job id, meta, group id, the function in any form rq
accepts, the queue's serializer) is set exactly as ``rq.Queue.create_job`` sets it, on a job
copied from a fresh one (:class:`Maker`), so the job is rq's own ``Job`` with the same state.

The encoder (:func:`fields`) writes what ``to_dict()`` writes for a job in the state such a
call leaves (:func:`encodable`: nothing set that the rule excludes, and no outcome yet); a job
in any other state is encoded by ``to_dict()``. :func:`template` gives the same fields to
:data:`ENQUEUE_MANY_SCRIPT`, which writes the names and constant values itself (a batch of 500
jobs sends a third of the arguments, which Redis parses and copies into Lua one by one).
``tests/protocol/test_lean_enqueue.py`` holds all of them equal to rq's path over generated calls.
"""

from __future__ import annotations

import os
import zlib
from datetime import datetime, timezone
from operator import attrgetter
from typing import Any

from rq.job import UNEVALUATED, JobStatus
from rq.job import Job as RQJob
from rq.utils import parse_timeout, resolve_function_reference

from .codec import NOIO
from .lean import stamp

__all__ = ['Maker', 'plain_options', 'encodable', 'fields', 'template', 'new_id', 'ENQUEUE_MANY_SCRIPT']


def plain_options(
    depends_on: Any, retry: Any, repeat: Any, on_success: Any, on_failure: Any, on_stopped: Any,
    webhooks: Any, rate_limit: Any,
) -> bool:  # fmt: skip
    """The rule: True when a call with these options may be created by :meth:`Maker.job`."""
    return (
        depends_on is None
        and retry is None
        and repeat is None
        and on_success is None
        and on_failure is None
        and on_stopped is None
        and webhooks is None
        and rate_limit is None
    )


def _seconds(value: Any) -> int | None:
    """``rq.utils.parse_timeout``, without its costly ``numbers.Integral`` check for None or an int."""
    return value if value is None or type(value) is int else parse_timeout(value)


def _short(text: str) -> str:
    """``rq.utils.truncate_long_string(text, 75)``."""
    return text if len(text) <= 75 else text[:75] + '...'


def _call_string(func_name: str, args: Any, kwargs: dict[str, Any]) -> str:
    """``rq.utils.get_call_string(func_name, args, kwargs, max_length=75)``: rq's description."""
    parts = [_short(repr(arg)) for arg in args]
    if kwargs:
        parts += sorted([f'{k}={_short(repr(v))}' for k, v in kwargs.items()])
    return f'{func_name}({", ".join(parts)})'


_UTC = timezone.utc
_now = datetime.now
_urandom = os.urandom


def new_id() -> str:
    """``str(uuid.uuid4())`` (rq's id for a job without one), at half its cost."""
    n = int.from_bytes(_urandom(16), 'big')
    n = (n & ~(0xF000 << 64) | (4 << 76)) & ~(0xC000 << 48) | (0x8000 << 48)  # version 4, RFC 4122 variant
    h = f'{n:032x}'
    return f'{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}'


class Maker:
    """Makes the jobs of one codec queue (its name, serializer and default timeout): each a copy
    of the attributes ``Job.__init__`` gives a fresh job, its mutable ones new."""

    def __init__(self, name: str, serializer: Any, default_timeout: int) -> None:
        self.name = name
        self.default_timeout = default_timeout
        self.state = dict(vars(RQJob(None, connection=NOIO, serializer=serializer)))
        self.mutable = tuple(k for k, v in self.state.items() if isinstance(v, (list, dict, set)))

    def job(
        self,
        func: Any,
        args: Any,
        kwargs: Any,
        *,
        timeout: Any = None,
        result_ttl: Any = None,
        ttl: Any = None,
        failure_ttl: Any = None,
        description: str | None = None,
        job_id: str | None = None,
        meta: dict[str, Any] | None = None,
        group_id: str | None = None,
    ) -> RQJob:
        """``Queue.create_job(..., status=QUEUED)`` for a call the rule lets through, with the
        same validations in the same order."""
        timeout = _seconds(timeout)
        if timeout is None:
            timeout = self.default_timeout
        elif timeout == 0:
            raise ValueError('0 timeout is not allowed. Use -1 for infinite timeout')
        result_ttl = _seconds(result_ttl)
        failure_ttl = _seconds(failure_ttl)
        ttl = _seconds(ttl)
        if ttl is not None and ttl <= 0:
            raise ValueError('Job ttl must be greater than 0')
        state = self.state.copy()
        for name in self.mutable:
            state[name] = type(state[name])()
        job = RQJob.__new__(RQJob)
        job.__dict__ = state
        job.created_at = _now(_UTC)
        if job_id is not None:
            job.id = job_id  # validated by rq's setter
        else:
            job._id = new_id()  # rq draws it on first use, which an enqueue always makes
        if self.name:
            job.origin = self.name
        instance, func_name = job._instance, job._func_name = resolve_function_reference(func)
        if args is None:
            args = ()
        if kwargs is None:
            kwargs = {}
        job._args = args
        job._kwargs = kwargs
        job.description = description or _call_string(func_name, args, kwargs)
        job.result_ttl = result_ttl
        job.failure_ttl = failure_ttl
        job.ttl = ttl
        job.timeout = timeout
        job.meta = meta or {}
        job.group_id = group_id
        job._status = JobStatus.QUEUED
        return job


# What to_dict() reads besides the fields fields() writes, and their values on a job the rule
# lets through: a job with other values is encoded by to_dict().
_OTHERS: dict[str, Any] = {
    '_success_callback_name': None,
    '_failure_callback_name': None,
    '_stopped_callback_name': None,
    'started_at': None,
    'ended_at': None,
    'last_heartbeat': None,
    'worker_name': None,
    'number_of_retries': None,
    'retries_left': None,
    'retry_intervals': None,
    'enqueue_at_front_on_retry': False,
    'repeats_left': None,
    'repeat_intervals': None,
    'rate_limit_key': None,
    'rate_limit_concurrency': None,
    '_result': None,
    '_exc_info': None,
    '_success_callback_timeout': None,
    '_failure_callback_timeout': None,
    '_stopped_callback_timeout': None,
    'webhooks': [],
    '_dependency_ids': [],
    'allow_dependency_failures': None,
    'enqueue_at_front': None,
    '_unreadable_meta': None,
    '_status': JobStatus.QUEUED,
}
_read_others = attrgetter(*_OTHERS)
_PLAIN_OTHERS = tuple(_OTHERS.values())


def encodable(job: RQJob) -> bool:
    """True when :func:`fields` writes what ``to_dict()`` writes for ``job`` (a queued job in the
    state a call the rule lets through leaves; ``created_at`` set)."""
    return job.created_at is not None and _read_others(job) == _PLAIN_OTHERS


def fields(job: RQJob) -> list[Any]:
    """The enqueue's ``HSET`` field/value items of an :func:`encodable` job, as ``enqueue._fields``
    gives them from ``to_dict()``: ``status`` first, then ``to_dict()``'s order."""
    data: Any = job._data
    if data is UNEVALUATED:
        data = job.data
    items: list[Any] = [
        'status', JobStatus.QUEUED.value,
        'created_at', stamp(job.created_at),
        'data', zlib.compress(data),
        'success_callback_name', '',
        'failure_callback_name', '',
        'stopped_callback_name', '',
        'started_at', '',
        'ended_at', '',
        'last_heartbeat', '',
        'worker_name', '',
        'group_id', job.group_id or '',
    ]  # fmt: skip
    if job.origin:
        items += ('origin', job.origin)
    if job.description is not None:
        items += ('description', job.description)
    if job.enqueued_at is not None:
        items += ('enqueued_at', stamp(job.enqueued_at))
    if job.timeout is not None:
        items += ('timeout', job.timeout)
    if job.result_ttl is not None:
        items += ('result_ttl', job.result_ttl)
    if job.failure_ttl is not None:
        items += ('failure_ttl', job.failure_ttl)
    if job.meta:
        items += ('meta', job.serializer.dumps(job.meta))
    if job.ttl:
        items += ('ttl', job.ttl)
    return items


def template(job: RQJob) -> list[Any]:
    """What :data:`ENQUEUE_MANY_SCRIPT` needs to write :func:`fields` of an :func:`encodable` job:
    the mask of the optional fields present, ``created_at``, ``data``, ``group_id``, then the
    present optional fields' values in order (``ttl`` comes with the job's header)."""
    data: Any = job._data
    if data is UNEVALUATED:
        data = job.data
    values: list[Any] = [0, stamp(job.created_at), zlib.compress(data), job.group_id or '']
    mask = 0
    if job.origin:
        values.append(job.origin)
        mask = 1
    if job.description is not None:
        values.append(job.description)
        mask |= 2
    if job.enqueued_at is not None:
        values.append(stamp(job.enqueued_at))
        mask |= 4
    if job.timeout is not None:
        values.append(job.timeout)
        mask |= 8
    if job.result_ttl is not None:
        values.append(job.result_ttl)
        mask |= 16
    if job.failure_ttl is not None:
        values.append(job.failure_ttl)
        mask |= 32
    if job.meta:
        values.append(job.serializer.dumps(job.meta))
        mask |= 64
    values[0] = mask
    return values


# ``enqueue.ENQUEUE_MANY_SCRIPT`` (rq's enqueue_many MULTI as one atomic call) for encodable jobs:
# the hash of each gets fields() (status first, then to_dict()'s order), built from template().
ENQUEUE_MANY_SCRIPT = """
-- KEYS: rq:queues, queue list, then per job: hash (and when its ttl > 0: dependents, dependencies)
-- ARGV: queue key, then per job: id, push side (L/R), ttl (0 = none), mask, created_at, data,
--       group_id, then the optional fields the mask names (bit i: OPTIONAL[i + 1])
local OPTIONAL = {'origin', 'description', 'enqueued_at', 'timeout', 'result_ttl', 'failure_ttl', 'meta'}
redis.call('SADD', KEYS[1], ARGV[1])
local a, k = 2, 3
while a <= #ARGV do
    local id, side, ttl, mask = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    local h = {'status', 'queued', 'created_at', ARGV[a + 4], 'data', ARGV[a + 5],
        'success_callback_name', '', 'failure_callback_name', '', 'stopped_callback_name', '',
        'started_at', '', 'ended_at', '', 'last_heartbeat', '', 'worker_name', '', 'group_id', ARGV[a + 6]}
    a = a + 7
    for i = 1, #OPTIONAL do
        if mask % 2 == 1 then
            h[#h + 1] = OPTIONAL[i]
            h[#h + 1] = ARGV[a]
            a = a + 1
        end
        mask = (mask - mask % 2) / 2
    end
    if ttl ~= '0' then
        h[#h + 1] = 'ttl'
        h[#h + 1] = ttl
    end
    redis.call('HSET', KEYS[k], unpack(h))
    local seconds = tonumber(ttl)
    if seconds > 0 then
        redis.call('EXPIRE', KEYS[k], seconds)
        redis.call('EXPIRE', KEYS[k + 1], seconds)
        redis.call('EXPIRE', KEYS[k + 2], seconds)
        k = k + 3
    else
        k = k + 1
    end
    if side == 'L' then
        redis.call('LPUSH', KEYS[2], id)
    else
        redis.call('RPUSH', KEYS[2], id)
    end
end
return 1
"""
