"""Worker-side transitions: registration, dequeue, execution start, heartbeats, outcomes
(rq-protocol §4.6–4.14, §6). One worker identity per process; each in-flight job is one
execution of it, as rq 3.0 models a worker with several executions (§16.3)."""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.job import Job as RQJob
from rq.job import JobStatus, Retry
from rq.results import Result
from rq.utils import as_text, current_timestamp, now, str_to_date, utcformat

from . import dependents, keys, ratelimit, scripts
from .batch import ALREADY_APPLIED, APPLIED, Batch, BatchRunner
from .codec import exc_string_payload, restore_job, save
from .enqueue import buffer_enqueue, buffer_schedule_in
from .outcomes import buffer_failed_registry_add, buffer_job_cleanup, buffer_result, buffer_retry, buffer_retry_after

logger = logging.getLogger('aiorq.protocol')

# Claim jobs for a worker in one atomic step: take up to `want` ids from the queues in order
# (LPOP) and/or the ids a blocking pop already took, and start each: the execution records
# (§4.7 "parent"), the job's `started` transition (§4.7 "horse"), the worker's state and
# heartbeat. A call whose reply was lost is sent again with the same execution ids: when those
# are already in the worker's executions index, the call only reports them (nothing is popped
# or started twice, and no popped id is left behind).
# KEYS: worker, worker executions, then per queue: queue, intermediate, wip.
# ARGV: worker name, utc timestamp, float now, int now, monitoring interval, lrem flag (the
# known ids sit in the single queue's intermediate list), want, job key prefix, execution key
# prefix, job executions key prefix and suffix, number of known ids, then per known id: queue
# index, job id; then the execution ids (known ones first, then one per id to pop).
# Returns per job {queue index (0: no longer started), job id, execution id, created_at,
# started_at, the job hash before the start (empty if the hash vanished: nothing to run; for a
# repeated call, the hash as the first one left it)}.
CLAIM_SCRIPT = """
local name, ts, nowf, nowi = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local interval, lrem, want = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local job_prefix, exec_prefix, execs_prefix, execs_suffix = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local nknown = tonumber(ARGV[12])
local nqueues = (#KEYS - 2) / 3
local first_exec = 13 + nknown * 2
local mine = {}
for i = first_exec, #ARGV do mine[ARGV[i]] = true end
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local job_id, exec_id = string.match(member, '^(.+):([^:]+)$')
    if exec_id and mine[exec_id] then
        local qi = 0
        for q = 1, nqueues do
            if redis.call('ZSCORE', KEYS[3 * q + 2], member) then qi = q end
        end
        local created = redis.call('HGET', exec_prefix .. job_id .. ':' .. exec_id, 'created_at')
        local jk = job_prefix .. job_id
        local since = redis.call('HGET', jk, 'started_at')
        table.insert(out, {qi, job_id, exec_id, created or nowf, since or ts, redis.call('HGETALL', jk)})
    end
end
if #out > 0 then return out end
local started = 0
local function start(q, job_id, exec_id, known)
    local jk = job_prefix .. job_id
    local ik = KEYS[3 * q + 1]
    local raw = redis.call('HGETALL', jk)
    if #raw == 0 then
        -- The hash vanished (expired or deleted) while queued: nothing to run, nothing to keep.
        if known and lrem == '1' then redis.call('LREM', ik, 1, job_id) end
        table.insert(out, {q, job_id, exec_id, nowf, ts, {}})
        return
    end
    local timeout = 180
    for f = 1, #raw, 2 do
        if raw[f] == 'timeout' then
            local t = tonumber(raw[f + 1])
            if t and t ~= 0 then timeout = t end
        end
    end
    local hb
    if timeout > 0 then hb = math.floor(math.min(timeout, interval)) + 60 else hb = interval + 60 end
    local member = job_id .. ':' .. exec_id
    local ek, exk = exec_prefix .. job_id .. ':' .. exec_id, execs_prefix .. job_id .. execs_suffix
    redis.call('HSET', ek, 'id', exec_id, 'job_id', job_id, 'created_at', nowf, 'last_heartbeat', nowf,
               'worker_name', name)
    redis.call('EXPIRE', ek, hb)
    redis.call('ZADD', exk, nowi + hb + 60, exec_id)
    redis.call('EXPIRE', exk, hb + 60)
    redis.call('ZADD', KEYS[3 * q + 2], nowi + hb, member)
    redis.call('SADD', KEYS[2], member)
    redis.call('EXPIRE', KEYS[2], hb + 60)
    redis.call('HSET', KEYS[1], 'state', 'busy')
    redis.call('HSET', jk, 'last_heartbeat', ts)
    redis.call('HSET', jk, 'last_heartbeat', ts, 'status', 'started', 'started_at', ts, 'worker_name', name)
    redis.call('PERSIST', jk)
    if known and lrem == '1' then redis.call('LREM', ik, 1, job_id) end
    started = started + 1
    table.insert(out, {q, job_id, exec_id, nowf, ts, raw})
end
for i = 0, nknown - 1 do
    start(tonumber(ARGV[13 + i * 2]), ARGV[14 + i * 2], ARGV[first_exec + i], true)
end
local taken = 0
for q = 1, nqueues do
    while taken < want do
        local job_id = redis.call('LPOP', KEYS[3 * q])
        if not job_id then break end
        taken = taken + 1
        start(q, job_id, ARGV[first_exec + nknown + taken - 1], false)
    end
end
if started > 0 then
    redis.call('HSET', KEYS[1], 'last_heartbeat', ts)
    redis.call('EXPIRE', KEYS[1], interval + 60)
    redis.call('EXPIRE', KEYS[2], interval + 60)
end
return out
"""

# Pop up to ARGV[1] ids from the queues in order (LPOP), or with ARGV[2] == '1' move them
# into the single queue's intermediate list (LMOVE LEFT RIGHT), as rq's dequeue does.
# KEYS: queue keys (single queue: queue, intermediate). Returns {queue index, id} pairs.
POP_SCRIPT = """
local want, single = tonumber(ARGV[1]), ARGV[2]
local out = {}
if single == '1' then
    while #out < want do
        local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
        if not id then break end
        table.insert(out, {1, id})
    end
    return out
end
for q = 1, #KEYS do
    while #out < want do
        local id = redis.call('LPOP', KEYS[q])
        if not id then break end
        table.insert(out, {q, id})
    end
end
return out
"""


@dataclass
class Execution:
    """One in-flight attempt, as the worker remembers it."""

    job: RQJob
    queue: str
    id: str
    created_at: float
    hb_ttl: int
    started_at: datetime | None = None
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def member(self) -> str:
        return f'{self.job.id}:{self.id}'


def heartbeat_ttl(timeout: Any, interval: int, working_time: float = 0.0) -> int:
    """``Worker.get_heartbeat_ttl``."""
    if timeout and timeout > 0:
        return int(min(timeout - working_time, interval)) + 60
    return interval + 60


# -- registration ------------------------------------------------------------------------


async def client_address(conn: Redis, name: str) -> str:
    """``CLIENT SETNAME`` then this connection's ``addr`` from ``CLIENT INFO`` (or ``unknown``)."""
    try:
        await conn.client_setname(name)
        info = await conn.execute_command('CLIENT', 'INFO')
        for part in as_text(info).split():
            if part.startswith('addr='):
                return part[5:]
    except Exception:
        pass
    return 'unknown'


async def register_birth(conn: Redis, name: str, queue_names: list[str], fields: dict[str, Any], ttl: int) -> None:
    """§6.2: refuse a live name; then one MULTI writes the record and both worker sets."""
    key = keys.worker(name)
    if await conn.exists(key) and not await conn.hexists(key, 'death'):
        raise ValueError(f'There exists an active worker named {name!r} already')
    async with conn.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=cast(dict[Any, Any], fields))
        pipe.sadd(keys.WORKERS, key)
        for q in queue_names:
            pipe.sadd(keys.workers_by_queue(q), key)
        pipe.expire(key, ttl)
        await pipe.execute()


async def register_death(conn: Redis, name: str, queue_names: list[str]) -> None:
    key = keys.worker(name)
    async with conn.pipeline(transaction=True) as pipe:
        pipe.srem(keys.WORKERS, key)
        for q in queue_names:
            pipe.srem(keys.workers_by_queue(q), key)
        pipe.hset(key, 'death', utcformat(now()))
        pipe.expire(key, 60)
        pipe.delete(keys.worker_executions(name))
        await pipe.execute()


def buffer_worker_heartbeat(pipe: Any, name: str, ttl: int) -> None:
    pipe.hset(keys.worker(name), 'last_heartbeat', utcformat(now()))
    pipe.expire(keys.worker(name), ttl)
    pipe.expire(keys.worker_executions(name), ttl)


async def set_state(conn: Redis, name: str, state: str) -> None:
    await conn.hset(keys.worker(name), 'state', state)


# The worker's state follows its executions index: ``busy`` while it has a member, else the
# given idle state (``idle`` or ``suspended``). Decided inside Redis, so a state write can never
# land after, and contradict, a start or a finish that changed the index meanwhile.
# KEYS: worker, worker executions. ARGV: the state when no execution runs.
STATE_SCRIPT = """
local state = ARGV[1]
if redis.call('SCARD', KEYS[2]) > 0 then state = 'busy' end
redis.call('HSET', KEYS[1], 'state', state)
return state
"""


def buffer_state(pipe: Any, name: str, idle_state: str) -> None:
    """:data:`STATE_SCRIPT` in a MULTI (``EVAL``: a MULTI cannot load a missing script)."""
    pipe.eval(STATE_SCRIPT, 2, keys.worker(name), keys.worker_executions(name), idle_state)


async def assert_state(conn: Redis, name: str, idle_state: str) -> str:
    """Write ``busy``, or ``idle_state`` when the executions index is empty; returns which."""
    state = await scripts.run(conn, STATE_SCRIPT, [keys.worker(name), keys.worker_executions(name)], [idle_state])
    return as_text(state)


async def set_field(conn: Redis, name: str, field_name: str, value: Any) -> None:
    await conn.hset(keys.worker(name), field_name, value)


async def heartbeat_and_check_suspended(conn: Redis, name: str, ttl: int) -> bool:
    """The work loop's suspension check: heartbeat and ``EXISTS rq:suspended`` in one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        buffer_worker_heartbeat(pipe, name, ttl)
        pipe.exists(keys.SUSPENDED)
        return bool((await pipe.execute())[-1])


# -- dequeue and start ---------------------------------------------------------------------


async def pop(conn: Redis, queue_names: list[str], want: int, single: bool) -> list[tuple[str, str]]:
    """Non-blocking pop of up to ``want`` ids, honouring queue order."""
    if single:
        ks = [keys.queue(queue_names[0]), keys.intermediate(queue_names[0])]
    else:
        ks = [keys.queue(q) for q in queue_names]
    found = await scripts.run(conn, POP_SCRIPT, ks, [want, '1' if single else '0'])
    return [(queue_names[int(qi) - 1], as_text(job_id)) for qi, job_id in found]


async def blocking_pop(conn: Redis, queue_names: list[str], timeout: float, single: bool) -> tuple[str, str] | None:
    """``BLMOVE`` into the intermediate list (one queue) or ``BLPOP`` (several), as rq does."""
    if single:
        q = queue_names[0]
        job_id = await conn.blmove(keys.queue(q), keys.intermediate(q), int(timeout), 'LEFT', 'RIGHT')
        return None if job_id is None else (q, as_text(job_id))
    result = cast(Any, await conn.blpop([keys.queue(q) for q in queue_names], timeout))
    if result is None:
        return None
    return keys.queue_name(as_text(result[0])), as_text(result[1])


async def push_back(conn: Redis, queue_name: str, job_id: str, single: bool) -> None:
    """Return an id popped while stopping or suspended to the head of its queue."""
    async with conn.pipeline(transaction=True) as pipe:
        if single:
            pipe.lrem(keys.intermediate(queue_name), 1, job_id)
        pipe.lpush(keys.queue(queue_name), job_id)
        await pipe.execute()


def new_execution_ids(count: int) -> list[str]:
    """Execution ids for a claim, chosen before it is sent so that it can be sent again."""
    return [uuid.uuid4().hex for _ in range(count)]


def _split(template: str) -> tuple[str, str]:
    """A key built around a NUL placeholder, as (prefix, suffix) for the claim script."""
    prefix, _, suffix = template.partition('\0')
    return prefix, suffix


async def claim_executions(
    conn: Redis,
    worker_name: str,
    queue_names: list[str],
    exec_ids: list[str],
    *,
    want: int = 0,
    known: list[tuple[str, str]] | None = None,
    interval: int,
    single: bool,
    serializer: Any = None,
) -> tuple[list[Execution], list[tuple[str, str, str, Exception]], list[str]]:
    """Pop up to ``want`` ids from ``queue_names`` in order, and/or take ``known`` (queue, id)
    pairs a blocking pop already moved, and start them all in one script (:data:`CLAIM_SCRIPT`).
    ``exec_ids`` holds one id per known job, then one per id to pop; repeating a call whose reply
    was lost with the same ``exec_ids`` returns what the first one started. Returns the
    executions, the ids that could not be decoded (their start was written; the caller fails
    them) — a vanished hash is skipped — and the queue of every id claimed, in order."""
    known = known or []
    assert len(exec_ids) == len(known) + want
    ts_dt = now()
    nowf = ts_dt.timestamp()
    ks = [keys.worker(worker_name), keys.worker_executions(worker_name)]
    for q in queue_names:
        ks += [keys.queue(q), keys.intermediate(q), keys.registry('started', q)]
    exec_prefix = keys.execution('\0', '').partition('\0')[0]
    argv: list[Any] = [
        worker_name,
        utcformat(ts_dt),
        repr(nowf),
        int(nowf),
        interval,
        '1' if single else '0',
        want,
        keys.job(''),
        exec_prefix,
        *_split(keys.executions('\0')),
        len(known),
    ]
    for queue_name, job_id in known:
        argv += [queue_names.index(queue_name) + 1, job_id]
    argv += exec_ids
    rows = await scripts.run(conn, CLAIM_SCRIPT, ks, argv)
    started: list[Execution] = []
    broken: list[tuple[str, str, str, Exception]] = []
    served: list[str] = []
    for qi, raw_id, raw_exec, created, since, flat in rows:
        job_id, exec_id = as_text(raw_id), as_text(raw_exec)
        if qi:
            served.append(queue_names[int(qi) - 1])
        if not flat:
            logger.warning('Job %s vanished from Redis before it could start; skipped', job_id)
            continue
        if not qi:
            logger.warning('Job %s: its execution %s ended before the worker learnt of it', job_id, exec_id)
            continue
        queue_name = queue_names[int(qi) - 1]
        raw = dict(zip(flat[0::2], flat[1::2]))
        try:
            job = restore_job(job_id, raw, serializer)
        except Exception as e:  # an unknown status, a malformed field: the hash is unreadable
            broken.append((queue_name, job_id, exec_id, e))
            continue
        stamp = as_text(since)
        stored = dict(raw)
        stored.update(
            {
                b'last_heartbeat': stamp.encode(),
                b'status': b'started',
                b'started_at': stamp.encode(),
                b'worker_name': worker_name.encode(),
            }
        )
        job._aiorq_stored = stored  # type: ignore[attr-defined]
        started_at = str_to_date(stamp)
        job.worker_name = worker_name
        job.last_heartbeat = started_at
        job.started_at = started_at
        job._status = JobStatus.STARTED
        hb = heartbeat_ttl(job.timeout or 180, interval)
        started.append(Execution(job, queue_name, exec_id, float(created), hb, started_at=started_at))
    return started, broken, served


async def start_executions(
    conn: Redis,
    worker_name: str,
    popped: list[tuple[str, str]],
    *,
    interval: int,
    single: bool,
    serializer: Any = None,
) -> tuple[list[Execution], list[tuple[str, str, str, Exception]]]:
    """Start ids already popped (see :func:`claim_executions`)."""
    queue_names = list(dict.fromkeys(q for q, _ in popped))
    started, broken, _ = await claim_executions(
        conn,
        worker_name,
        queue_names,
        new_execution_ids(len(popped)),
        known=popped,
        interval=interval,
        single=single,
        serializer=serializer,
    )
    return started, broken


# -- heartbeats ----------------------------------------------------------------------------


def heartbeat_commands(pipe: Any, worker_name: str, executions: list[Execution], interval: int) -> None:
    """§4.8 for each execution: six commands, the job's ``HSET`` last (the caller adds the
    worker's own heartbeat)."""
    stamp = now()
    nowi = current_timestamp()
    for ex in executions:
        working = (stamp - ex.started_at).total_seconds() if ex.started_at else 0.0
        ttl = heartbeat_ttl(ex.job.timeout or 180, interval, working)
        pipe.hset(keys.execution(ex.job.id, ex.id), 'last_heartbeat', stamp.timestamp())
        pipe.expire(keys.execution(ex.job.id, ex.id), ttl)
        pipe.zadd(keys.registry('started', ex.queue), {ex.member: nowi + ttl}, xx=True)
        pipe.zadd(keys.executions(ex.job.id), {ex.id: nowi + ttl + 60}, xx=True)
        pipe.expire(keys.executions(ex.job.id), ttl + 60)
        pipe.hset(keys.job(ex.job.id), 'last_heartbeat', utcformat(stamp))


def heartbeat_sync(
    conn: Any,
    worker_name: str,
    executions: list[Execution],
    *,
    interval: int,
    idle_ttl: int,
    state: str,
    base_fields: Callable[[], dict[str, Any]],
    queue_names: Sequence[str] = (),
) -> bool:
    """One heartbeat MULTI on a blocking client (the worker's heartbeat thread): the worker's
    record, its state re-asserted (``state`` is the one to show when no execution runs), and
    §4.8 for each execution. An ``HSET`` that created a hash
    means the hash had expired or been deleted: a job's is removed again, the worker's rebuilt
    and put back in the worker sets (Redis lost its data, or the record expired during an
    outage and maintenance dropped it). Returns whether the worker was registered again."""
    ttl = interval + 60 if executions else idle_ttl
    with conn.pipeline(transaction=True) as pipe:
        buffer_worker_heartbeat(pipe, worker_name, ttl)
        buffer_state(pipe, worker_name, state)
        heartbeat_commands(pipe, worker_name, executions, interval)
        results = pipe.execute()
    # Four worker-level commands come first, then six per execution, the job's HSET last.
    recreated_jobs = [ex for i, ex in enumerate(executions) if results[4 + i * 6 + 5] == 1]
    if results[0] != 1 and not recreated_jobs:
        return False
    with conn.pipeline(transaction=True) as pipe:
        for ex in recreated_jobs:
            pipe.delete(keys.job(ex.job.id))
        if results[0] == 1:
            key = keys.worker(worker_name)
            pipe.hset(key, mapping=cast(dict[Any, Any], base_fields()))
            pipe.expire(key, ttl)
            pipe.sadd(keys.WORKERS, key)
            for q in queue_names:
                pipe.sadd(keys.workers_by_queue(q), key)
        pipe.execute()
    return bool(results[0] == 1)


async def blocking_client_id(conn: Redis) -> int:
    """The id of the connection a blocking pop will run on, for :func:`unblock`."""
    return int(await conn.client_id())


async def unblock(conn: Redis, client_id: int) -> None:
    """``CLIENT UNBLOCK``: wake a pop blocked on another connection (it returns as if timed out)."""
    await conn.client_unblock(client_id)


# -- outcomes ------------------------------------------------------------------------------


def buffer_execution_cleanup(sink: Any, worker_name: str, ex: Execution) -> None:
    sink.delete(keys.execution(ex.job.id, ex.id))
    sink.zrem(keys.registry('started', ex.queue), ex.member)
    sink.zrem(keys.executions(ex.job.id), ex.id)
    sink.srem(keys.worker_executions(worker_name), ex.member)


def _counters(sink: Any, worker_name: str, job: RQJob, success: bool) -> None:
    field_name = 'successful_job_count' if success else 'failed_job_count'
    sink.hincrby(keys.worker(worker_name), field_name, 1)
    if job.started_at and job.ended_at:
        sink.hincrbyfloat(
            keys.worker(worker_name), 'total_working_time', (job.ended_at - job.started_at).total_seconds()
        )


def buffer_repeat(sink: Any, job: RQJob) -> None:
    """``Repeat.schedule`` (3.0: consume the interval list from the front)."""
    interval = 0
    if job.repeat_intervals:
        interval = job.repeat_intervals[0]
        if len(job.repeat_intervals) > 1:
            job.repeat_intervals = job.repeat_intervals[1:]
    assert job.repeats_left
    job.repeats_left -= 1
    save(sink, job)
    if interval == 0:
        buffer_enqueue(sink, job, job.origin, int(job.timeout or 180), False)
    else:
        buffer_schedule_in(sink, job, interval)


def plan(job: RQJob) -> RQJob:
    """A copy of the job to build an outcome on. Builders change the copy (status, retries left,
    repeats…); the caller's job takes its values only once the outcome committed, so building
    the same outcome again after an outage writes the same values."""
    return copy.copy(job)


def adopt(job: RQJob, planned: RQJob) -> None:
    """The committed outcome becomes what the caller's job object says."""
    job.__dict__.update(planned.__dict__)


def _guard(batch: Batch, worker_name: str, ex: Execution, planned: RQJob, deleted: bool) -> None:
    """Run only while this execution owns the job (its started-registry member); if it does not,
    the probes tell an earlier, committed attempt of this same outcome (its reply lost in an
    outage) from an outcome written by someone else: the execution's index member is gone, and
    the job hash holds this outcome's ``ended_at`` (or is gone, for a deleting outcome)."""
    batch.guard_member(keys.registry('started', ex.queue), ex.member)
    batch.probe_not_member(keys.worker_executions(worker_name), ex.member)
    if deleted:
        batch.probe_missing(keys.job(planned.id))
    elif planned.ended_at is not None:
        batch.probe_field(keys.job(planned.id), 'ended_at', utcformat(planned.ended_at))


async def _commit(conn: Redis, batch: Batch, worker_name: str, ex: Execution) -> bool:
    """Run an outcome batch behind :func:`_guard`. When another process owns the job now
    (stopped, declared abandoned, canceled) only the execution records are removed."""
    if await batch.run(conn) in (APPLIED, ALREADY_APPLIED):
        return True
    return await _superseded(conn, worker_name, ex)


async def _superseded(conn: Redis, worker_name: str, ex: Execution) -> bool:
    logger.warning('Job %s: its execution %s ended elsewhere; outcome not recorded', ex.job.id, ex.id)
    cleanup = Batch()
    buffer_execution_cleanup(cleanup, worker_name, ex)
    await cleanup.run(conn)
    return False


async def finish_success(
    conn: Redis,
    worker_name: str,
    ex: Execution,
    return_value: Any,
    default_result_ttl: int,
    serializer: Any = None,
    run: BatchRunner | None = None,
) -> bool:
    """§4.9 (with §4.11 phase A inside, §4.13 repeats). ``False`` when the outcome was superseded."""
    result_ttl = ex.job.get_result_ttl(default_result_ttl)
    dependents_key = keys.dependents(ex.job.id)
    repeating = ex.job.repeats_left is not None and ex.job.repeats_left > 0

    async def fill(sink: Any, job: RQJob) -> None:
        """Everything the success transaction writes, after any dependents phase A."""
        _counters(sink, worker_name, job, True)
        if result_ttl != 0:
            job._status = JobStatus.FINISHED
            sink.hset(keys.job(job.id), 'status', JobStatus.FINISHED.value)
            save(sink, job, include_meta=False, include_result=False)
            _execution_result(sink, job, ex, worker_name, Result.Type.SUCCESSFUL, result_ttl, return_value=return_value)
            score: Any = '+inf' if result_ttl == -1 else current_timestamp() + result_ttl
            sink.zadd(keys.registry('finished', job.origin), {job.id: score})
        if repeating:
            buffer_repeat(sink, job)
        else:
            await buffer_job_cleanup(conn, sink, job, result_ttl)
            job._status = JobStatus.FINISHED
        buffer_execution_cleanup(sink, worker_name, ex)

    def planned() -> RQJob:
        job = plan(ex.job)
        job._result = return_value
        return job

    # Fast path, one script call: valid only while the job has no dependents (guard 2); rq's
    # WATCH-based path below handles the others.
    job = planned()
    batch = Batch()
    _guard(batch, worker_name, ex, job, deleted=result_ttl == 0 and not repeating)
    batch.guard_scard(dependents_key, 0)
    await fill(batch, job)
    outcome = await (run(batch) if run is not None else batch.run(conn))
    if outcome in (APPLIED, ALREADY_APPLIED):
        adopt(ex.job, job)
        await ratelimit.release_slot(conn, ex.job)
        return True
    if outcome == 1:
        return await _superseded(conn, worker_name, ex)
    # A dependent exists (or appeared): rq's WATCH on the dependents set, with phase A inside.
    moved: dict[str, list[str]] = {}
    async with conn.pipeline(transaction=True) as pipe:
        while True:
            job = planned()
            try:
                await pipe.watch(dependents_key, keys.execution(job.id, ex.id))
                if await pipe.zscore(keys.registry('started', ex.queue), ex.member) is None:
                    await pipe.reset()
                    return await _superseded(conn, worker_name, ex)
                moved = await dependents.move_dependents_to_ready(conn, job, pipe=pipe, serializer=serializer)
                if not pipe.explicit_transaction:
                    pipe.multi()
                await fill(pipe, job)
                await pipe.execute()
                break
            except WatchError:
                continue
    adopt(ex.job, job)
    await dependents.enqueue_ready_by_queue(conn, moved, serializer=serializer)
    await ratelimit.release_slot(conn, ex.job)
    return True


def _execution_result(
    sink: Any, job: RQJob, ex: Execution | None, worker_name: str, type_: Result.Type, ttl: int | None, **values: Any
) -> None:
    """The Result entry of an execution's outcome, with the execution's id and times."""
    buffer_result(
        sink,
        job,
        type_,
        ttl,
        worker_name=worker_name,
        execution_id=ex.id if ex else None,
        execution_started_at=_dt(ex.created_at) if ex else None,
        execution_ended_at=job.ended_at,
        **values,
    )


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


async def finish_failure(
    conn: Redis,
    worker_name: str,
    original: RQJob,
    ex: Execution | None,
    exc_string: str,
    *,
    stopped: bool = False,
    record: bool = True,
) -> bool:
    """§4.10 / §4.12 exception retries / §4.14 stopped; ``ex=None`` for a job that never
    started (stuck in the intermediate list). ``record=False`` is
    ``--disable-default-exception-handler`` (no registry, hash save or Result)."""
    job = plan(original)
    retry = job.should_retry and not stopped
    deleted = bool(record and not retry and job.failure_ttl == 0)
    batch = Batch()
    if ex is not None:
        _guard(batch, worker_name, ex, job, deleted)
        buffer_execution_cleanup(batch, worker_name, ex)
    if stopped:
        job._status = JobStatus.STOPPED
        batch.hset(keys.job(job.id), 'status', JobStatus.STOPPED.value)
    elif not retry:
        job._status = JobStatus.FAILED
        batch.hset(keys.job(job.id), 'status', JobStatus.FAILED.value)
    if record and not retry:
        await buffer_failed_registry_add(conn, batch, job, exc_string)
        _execution_result(batch, job, ex, worker_name, Result.Type.FAILED, job.failure_ttl, exc_string=exc_string)
    _counters(batch, worker_name, job, False)
    if retry:
        await buffer_retry(conn, batch, job)
    if ex is not None:
        if not await _commit(conn, batch, worker_name, ex):
            return False
    else:
        await batch.run(conn)
    adopt(original, job)
    if not retry:
        try:
            await dependents.enqueue_dependents(conn, job, serializer=job.serializer)
        except Exception:
            logger.exception('Job %s: releasing dependents failed; left for maintenance', job.id)
    await ratelimit.release_slot(conn, job)
    return True


async def finish_returned_retry(conn: Redis, worker_name: str, ex: Execution, retry: Retry) -> tuple[bool, bool]:
    """§4.12 return-based retry. Returns (committed, exhausted)."""
    job = plan(ex.job)
    job._result = retry  # rq's plain saves after a run carry the legacy ``result`` field
    batch = Batch()
    exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)
    _guard(batch, worker_name, ex, job, deleted=exhausted and job.failure_ttl == 0)
    if exhausted:
        job._status = JobStatus.FAILED
        batch.hset(keys.job(job.id), 'status', JobStatus.FAILED.value)
        buffer_execution_cleanup(batch, worker_name, ex)
        await buffer_failed_registry_add(conn, batch, job, '')
        _execution_result(
            batch, job, ex, worker_name, Result.Type.MAX_RETRIES_EXCEEDED, job.failure_ttl, return_value=retry
        )
        _counters(batch, worker_name, job, False)
    else:
        _counters(batch, worker_name, job, False)
        _execution_result(batch, job, ex, worker_name, Result.Type.RETRIED, job.failure_ttl, return_value=retry)
        interval = Retry.get_interval(job.number_of_retries or 0, retry.intervals)
        job.number_of_retries = 1 if not job.number_of_retries else job.number_of_retries + 1
        job.enqueue_at_front_on_retry = job.enqueue_at_front_on_retry or retry.enqueue_at_front
        await buffer_retry_after(conn, batch, job, interval)
        buffer_execution_cleanup(batch, worker_name, ex)
    if not await _commit(conn, batch, worker_name, ex):
        return False, exhausted
    adopt(ex.job, job)
    if exhausted:
        await dependents.enqueue_dependents(conn, job, serializer=job.serializer)
    await ratelimit.release_slot(conn, job)
    return True, exhausted


async def fail_unstarted(
    conn: Redis, worker_name: str, queue_name: str, job_id: str, exec_id: str, exc_string: str
) -> None:
    """A started job whose hash cannot be decoded: its execution records go, and it is failed
    (failed registry, Result, counters) without rq's codec, so the id is not lost."""
    batch = Batch()
    member = f'{job_id}:{exec_id}'
    batch.delete(keys.execution(job_id, exec_id))
    batch.zrem(keys.registry('started', queue_name), member)
    batch.zrem(keys.executions(job_id), exec_id)
    batch.srem(keys.worker_executions(worker_name), member)
    batch.hset(keys.job(job_id), 'status', JobStatus.FAILED.value)
    batch.zadd(keys.registry('failed', queue_name), {job_id: current_timestamp() + 31536000})
    batch.expire(keys.job(job_id), 31536000)
    batch.xadd(
        keys.results(job_id),
        {'type': Result.Type.FAILED.value, 'worker_name': worker_name, 'exc_string': exc_string_payload(exc_string)},
        maxlen=10,
    )
    batch.hincrby(keys.worker(worker_name), 'failed_job_count', 1)
    await batch.run(conn)
