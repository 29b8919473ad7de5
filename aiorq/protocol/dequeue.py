"""Dequeue and start (rq-protocol §4.6, §4.7): popping ids in queue order, blocking pops, and
starting popped jobs as executions of this worker in one atomic step. One worker identity per
process; each in-flight job is one execution of it, as rq 3.0 models it (§16.3)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.utils import as_text, now

from . import keys, lean, scripts, wire
from .codec import parse_date
from .defaults import DEFAULT_JOB_TIMEOUT, EXECUTIONS_SLACK, HEARTBEAT_SLACK

logger = logging.getLogger('aiorq.protocol')

# Claim jobs for a worker in one atomic step: take up to `want` ids from the queues in order
# (LPOP) and/or the ids a blocking pop already took, and start each: the execution records
# (§4.7 "parent"), the job's `started` transition (§4.7 "horse"), the worker's state and
# heartbeat. A call whose reply was lost is sent again with the same execution ids: when those
# are already in the worker's executions index, the call only reports them (nothing is popped
# or started twice, and no popped id is left behind). The start time is the caller's clock
# reading from before the call; popping stops at a job enqueued after it (a dependent released
# meanwhile, say), so that no job starts before it was enqueued: the next call takes it.
# KEYS: worker, worker executions, then per queue: queue, intermediate, wip.
# ARGV: worker name, utc timestamp, float now, int now, monitoring interval, lrem flag (the
# known ids sit in the single queue's intermediate list), want, job key prefix, execution key
# prefix, job executions key prefix and suffix, the default job timeout, the heartbeat slack,
# the executions index slack (see defaults.py), number of known ids, then per known id: queue
# index, job id; then the execution ids as a base and a count (id i is the base followed by i in 8
# hex digits: known ones first, then one per id to pop; a count, not a list, so that asking for 100
# ids costs the call two arguments).
# Returns {rows, 1 if popping stopped at a job enqueued after the start time else 0}, a row per
# job: {queue index (0: no longer started), job id, execution id, created_at, started_at, the job
# hash before the start (empty if the hash vanished: nothing to run; for a repeated call, the
# hash as the first one left it)}.
CLAIM_SCRIPT = """
local name, ts, nowf, nowi = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local interval, lrem, want = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local job_prefix, exec_prefix, execs_prefix, execs_suffix = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local default_timeout, slack, execs_slack = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local nknown = tonumber(ARGV[15])
local nqueues = (#KEYS - 2) / 3
local first_exec = 16 + nknown * 2
local base, nexec = ARGV[first_exec], tonumber(ARGV[first_exec + 1])
local function exec_of(i) return base .. string.format('%08x', i) end
local function is_mine(exec_id)
    if #exec_id ~= #base + 8 or string.sub(exec_id, 1, #base) ~= base then return false end
    local i = tonumber(string.sub(exec_id, #base + 1), 16)
    return i ~= nil and i < nexec
end
local out = {}
-- A call that started anything leaves its first execution id in the worker hash: only a retry
-- of that call (its reply lost) finds it there and looks up what it started.
local token = exec_of(0)
local replay = {}
if redis.call('HGET', KEYS[1], 'aiorq_claim') == token then replay = redis.call('SMEMBERS', KEYS[2]) end
for _, member in ipairs(replay) do
    local job_id, exec_id = string.match(member, '^(.+):([^:]+)$')
    if exec_id and is_mine(exec_id) then
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
if #out > 0 then return {out, 0} end
local started = 0
local function start(q, job_id, exec_id, known, raw)
    local jk = job_prefix .. job_id
    local ik = KEYS[3 * q + 1]
    raw = raw or redis.call('HGETALL', jk)
    if #raw == 0 then
        -- The hash vanished (expired or deleted) while queued: nothing to run, nothing to keep.
        if known and lrem == '1' then redis.call('LREM', ik, 1, job_id) end
        table.insert(out, {q, job_id, exec_id, nowf, ts, {}})
        return
    end
    local timeout = default_timeout
    for f = 1, #raw, 2 do
        if raw[f] == 'timeout' then
            local t = tonumber(raw[f + 1])
            if t and t ~= 0 then timeout = t end
        end
    end
    local hb
    if timeout > 0 then hb = math.floor(math.min(timeout, interval)) + slack else hb = interval + slack end
    local member = job_id .. ':' .. exec_id
    local ek, exk = exec_prefix .. job_id .. ':' .. exec_id, execs_prefix .. job_id .. execs_suffix
    redis.call('HSET', ek, 'id', exec_id, 'job_id', job_id, 'created_at', nowf, 'last_heartbeat', nowf,
               'worker_name', name)
    redis.call('EXPIRE', ek, hb)
    redis.call('ZADD', exk, nowi + hb + execs_slack, exec_id)
    redis.call('EXPIRE', exk, hb + execs_slack)
    redis.call('ZADD', KEYS[3 * q + 2], nowi + hb, member)
    redis.call('SADD', KEYS[2], member)
    redis.call('HSET', jk, 'last_heartbeat', ts, 'status', 'started', 'started_at', ts, 'worker_name', name)
    redis.call('PERSIST', jk)
    if known and lrem == '1' then redis.call('LREM', ik, 1, job_id) end
    started = started + 1
    table.insert(out, {q, job_id, exec_id, nowf, ts, raw})
end
for i = 0, nknown - 1 do
    start(tonumber(ARGV[16 + i * 2]), ARGV[17 + i * 2], exec_of(i), true)
end
local taken, fresh = 0, false
for q = 1, nqueues do
    while taken < want and not fresh do
        local job_id = redis.call('LPOP', KEYS[3 * q])
        if not job_id then break end
        -- The hash is read once: its enqueued_at decides, and start() uses it as read.
        local raw = redis.call('HGETALL', job_prefix .. job_id)
        local enqueued
        for f = 1, #raw, 2 do
            if raw[f] == 'enqueued_at' then enqueued = raw[f + 1] end
        end
        fresh = enqueued and enqueued > ts  -- same fixed-width UTC format: text order is time order
        if fresh then
            -- Put back where it was (the rare case: one call in a run of the queue, one command
            -- instead of a look at the head before every pop).
            redis.call('LPUSH', KEYS[3 * q], job_id)
        else
            taken = taken + 1
            start(q, job_id, exec_of(nknown + taken - 1), false, raw)
        end
    end
end
if started > 0 then
    -- Once per call, not per job: the last write of each field is what rq's sequence leaves.
    redis.call('HSET', KEYS[1], 'state', 'busy', 'last_heartbeat', ts, 'aiorq_claim', token)
    redis.call('EXPIRE', KEYS[1], interval + slack)
    redis.call('EXPIRE', KEYS[2], interval + slack)
end
return {out, fresh and 1 or 0}
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


class Started(Protocol):
    """What an outcome needs to know of the execution it ends (the worker's own execution
    object, or a :class:`Claimed` record): the job's record and rq's job built from it on
    demand, its queue, the execution's id and creation time, and the times the runner stamped
    at its end (``last_heartbeat`` None: not stamped, the stored one stays)."""

    record: lean.JobRecord
    queue: str
    id: str
    created_at: float
    started_at: datetime | None
    serializer: Any
    ended_at: datetime | None
    last_heartbeat: datetime | None

    @property
    def job_id(self) -> str: ...

    @property
    def job(self) -> RQJob: ...

    @property
    def member(self) -> str: ...


@dataclass(eq=False)
class Claimed:
    """A job a claim started: its record (the hash with the start's fields, decoded by
    :func:`lean.decode`), its queue, the execution's id, creation time (epoch seconds) and start
    time (the job's ``started_at``). rq's job for it (:attr:`job`) is built the first time it is
    asked for, once (the fallback, callbacks, ``get_current_job()``), on any thread."""

    record: lean.JobRecord
    queue: str
    id: str
    created_at: float
    started_at: datetime | None = None
    serializer: Any = None
    ended_at: datetime | None = None  # stamped by the runner when the function returned or raised
    last_heartbeat: datetime | None = None
    _job: RQJob | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def job_id(self) -> str:
        return self.record.id

    @property
    def member(self) -> str:
        """The execution's member in the started registry and the worker's index."""
        return f'{self.record.id}:{self.id}'

    @property
    def job(self) -> RQJob:
        """rq's job, on the no-I/O codec connection, built from the record on first use."""
        job = self._job
        if job is None:
            with self._lock:
                job = self._job
                if job is None:
                    job = self._job = lean.rq_job(self.record, self.serializer)
        return job

    @property
    def rq_job_built(self) -> bool:
        return self._job is not None

    @property
    def fallback(self) -> bool:
        """Whether rq's objects drive this execution (:func:`lean.needs_rq_job`)."""
        return self.record.fallback is not None

    @property
    def description(self) -> str | None:
        return self.job.description if self.record.irregular else self.record.description

    @property
    def timeout(self) -> int | float | None:
        """The job's own ``timeout`` field (None: the default applies)."""
        return self.job.timeout if self.record.irregular else self.record.timeout

    @property
    def should_retry(self) -> bool:
        """Whether a failure becomes an exception retry (``Job.should_retry``)."""
        return self.job.should_retry if self.record.irregular else self.record.should_retry


async def pop(conn: Redis, queue_names: list[str], want: int, single: bool) -> list[tuple[str, str]]:
    """Non-blocking pop of up to ``want`` ids, honouring queue order."""
    if single:
        ks = [keys.queue(queue_names[0]), keys.intermediate(queue_names[0])]
    else:
        ks = [keys.queue(q) for q in queue_names]
    found = await scripts.run(conn, POP_SCRIPT, ks, [want, '1' if single else '0'])
    return [(queue_names[int(qi) - 1], as_text(job_id)) for qi, job_id in found]


async def blocking_pop(
    conn: Redis,
    queue_names: list[str],
    timeout: float,
    single: bool,
    client_id: Callable[[int], None] | None = None,
) -> tuple[str, str] | None:
    """``BLMOVE`` into the intermediate list (one queue) or ``BLPOP`` (several), as rq does;
    ``client_id`` is told the id of the connection it blocks on (for ``CLIENT UNBLOCK``).

    The reply is awaited for the block's time plus :data:`POP_READ_MARGIN` (``conn`` has no socket
    timeout, so that the block is not cut): a server that stops answering (a partition, a host that
    vanished without closing the connection) raises ``TimeoutError`` instead of hanging the worker.
    """
    wait = timeout + POP_READ_MARGIN
    if single:
        q = queue_names[0]
        args: tuple[Any, ...] = ('BLMOVE', keys.queue(q), keys.intermediate(q), 'LEFT', 'RIGHT', int(timeout))
        job_id = await wire.blocking_command(conn, args, wait, client_id)
        return None if job_id is None else (q, as_text(job_id))
    result = await wire.blocking_command(
        conn, ('BLPOP', *[keys.queue(q) for q in queue_names], timeout), wait, client_id
    )
    if result is None:
        return None
    return keys.queue_name(as_text(result[0])), as_text(result[1])


POP_READ_MARGIN = 10.0  # seconds


async def push_back(conn: Redis, queue_name: str, job_id: str, single: bool) -> None:
    """Return an id popped while stopping or suspended to the head of its queue."""
    async with conn.pipeline(transaction=True) as pipe:
        if single:
            pipe.lrem(keys.intermediate(queue_name), 1, job_id)
        pipe.lpush(keys.queue(queue_name), job_id)
        await pipe.execute()


@dataclass(frozen=True)
class ExecutionIds:
    """Execution ids for a claim, chosen before it is sent so that it can be sent again: 32 hex
    digits like rq's (``uuid4().hex``), 96 random bits shared by the claim and a counter, since
    a claim asks for up to ``concurrency`` ids and most go unused when the queue runs dry. The
    script derives them from ``base`` and ``count`` (:data:`CLAIM_SCRIPT`)."""

    base: str
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return f'{self.base}{i:08x}'


def new_execution_ids(count: int) -> ExecutionIds:
    """``count`` fresh execution ids for one claim."""
    return ExecutionIds(uuid.uuid4().hex[:24], count)


def _split(template: str) -> tuple[str, str]:
    """A key built around a NUL placeholder, as (prefix, suffix) for the claim script."""
    prefix, _, suffix = template.partition('\0')
    return prefix, suffix


Broken = tuple[str, str, str, Exception]  # queue, job id, execution id, why it cannot be read


async def claim_executions(
    conn: Redis,
    worker_name: str,
    queue_names: list[str],
    exec_ids: ExecutionIds,
    *,
    want: int = 0,
    known: list[tuple[str, str]] | None = None,
    interval: int,
    single: bool,
    serializer: Any = None,
) -> tuple[list[Claimed], list[Broken], list[str], bool]:
    """Pop up to ``want`` ids from ``queue_names`` in order, and/or take ``known`` (queue, id)
    pairs a blocking pop already moved, and start them all in one script (:data:`CLAIM_SCRIPT`).
    ``exec_ids`` holds one id per known job, then one per id to pop; repeating a call whose reply
    was lost with the same ``exec_ids`` returns what the first one started. Returns the
    started jobs, the ids that could not be decoded (their start was written; the caller fails
    them) — a vanished hash is skipped — the queue of every id claimed, in order, and whether
    popping stopped at a job enqueued after this call's start time (the next call takes it)."""
    known = known or []
    assert len(exec_ids) == len(known) + want
    ts_dt = now()
    ts = lean.stamp(ts_dt)
    ks = [keys.worker(worker_name), keys.worker_executions(worker_name)]
    for q in queue_names:
        ks += [keys.queue(q), keys.intermediate(q), keys.registry('started', q)]
    argv = _claim_argv(worker_name, queue_names, ts_dt, interval, single, want, known)
    argv += [exec_ids.base, exec_ids.count]
    rows, waiting = await wire.run_script(conn, CLAIM_SCRIPT, ks, argv)
    started: list[Claimed] = []
    broken: list[Broken] = []
    served: list[str] = []
    for qi, raw_id, raw_exec, created, since, flat in rows:
        job_id, exec_id = as_text(raw_id), as_text(raw_exec)
        if qi:
            served.append(queue_names[int(qi) - 1])
        if not flat:
            logger.warning('Job %s vanished from Redis before it could start; skipped', job_id)
        elif not qi:
            logger.warning('Job %s: its execution %s ended before the worker learnt of it', job_id, exec_id)
        else:
            queue_name = queue_names[int(qi) - 1]
            try:
                claimed = _claimed(
                    job_id, flat, queue_name, exec_id, float(created), since, serializer, worker_name, (ts_dt, ts)
                )
            except Exception as e:  # an unknown status, a malformed field: the hash is unreadable
                broken.append((queue_name, job_id, exec_id, e))
                continue
            started.append(claimed)
    return started, broken, served, bool(waiting)


def _claim_argv(
    worker_name: str,
    queue_names: list[str],
    ts_dt: datetime,
    interval: int,
    single: bool,
    want: int,
    known: list[tuple[str, str]],
) -> list[Any]:
    """:data:`CLAIM_SCRIPT`'s arguments up to (not including) the execution ids."""
    nowf = ts_dt.timestamp()
    exec_prefix = keys.execution('\0', '').partition('\0')[0]
    argv: list[Any] = [
        worker_name,
        lean.stamp(ts_dt),  # microseconds kept: the text stands for exactly ts_dt
        repr(nowf),
        int(nowf),
        interval,
        '1' if single else '0',
        want,
        keys.job(''),
        exec_prefix,
        *_split(keys.executions('\0')),
        DEFAULT_JOB_TIMEOUT,
        HEARTBEAT_SLACK,
        EXECUTIONS_SLACK,
        len(known),
    ]
    for queue_name, job_id in known:
        argv += [queue_names.index(queue_name) + 1, job_id]
    return argv


_KNOWN_STATUSES = frozenset(s.value.encode() for s in JobStatus)


def _claimed(
    job_id: str,
    flat: list[bytes],
    queue_name: str,
    exec_id: str,
    created: float,
    since: bytes,
    serializer: Any,
    worker_name: str,
    ts: tuple[datetime, bytes],
) -> Claimed:
    """A started row: the hash before the start with the start's four fields (the script wrote
    them; ``since`` is the first claim's stamp on a repeated call), decoded lean. A hash the lean
    codec calls irregular gets rq's job at once: rq's reader decides whether it can be read."""
    raw = dict(zip(flat[0::2], flat[1::2]))
    status = raw.get(b'status')
    if status and status not in _KNOWN_STATUSES:  # rq's reader refuses the hash (the start hid it)
        raise ValueError(f'{status.decode(errors="replace")!r} is not a valid JobStatus')
    raw.update(lean.encode_start(worker_name, since))
    record = lean.decode(job_id, raw)
    started_at = ts[0] if since == ts[1] else parse_date(since)  # a replay keeps its own
    claimed = Claimed(record, queue_name, exec_id, created, started_at, serializer)
    if record.irregular:
        claimed._job = lean.rq_job(record, serializer)  # raises where rq's Job.restore raises
    return claimed


async def start_executions(
    conn: Redis,
    worker_name: str,
    popped: list[tuple[str, str]],
    *,
    interval: int,
    single: bool,
    serializer: Any = None,
) -> tuple[list[Claimed], list[Broken]]:
    """Start ids already popped (see :func:`claim_executions`)."""
    queue_names = list(dict.fromkeys(q for q, _ in popped))
    started, broken, _, _ = await claim_executions(
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
