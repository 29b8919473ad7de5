"""What the dashboard (``aiorq.web``) reads.

Every page is one Lua call whose Redis commands are bounded by the page size (and by the number
of queues, workers and executions in flight), never by the size of a queue or registry: ranges by
rank (``LRANGE``/``ZREVRANGE`` with offsets, ``SORT … LIMIT``), then the listed jobs' fields. The
actions are in :mod:`.actions`.

Nothing here deserializes a job's ``data``, ``meta`` or results: pages read fields of the job
hash as bytes, which the dashboard shows only when they are text or JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from rq.utils import as_text

from . import jobs, keys, scripts, stats

# The registries of a queue as the dashboard shows them, after the queue's own list.
KINDS = ('started', 'finished', 'failed', 'deferred', 'scheduled', 'canceled', 'ready')
# The job hash fields a list of jobs shows (never ``data`` or ``meta``).
LIST_FIELDS = ('status', 'description', 'created_at', 'enqueued_at', 'started_at', 'ended_at', 'worker_name', 'origin')
EXECUTIONS_PER_WORKER = 500  # most executions read per worker (the rest are counted)
RELATIONS_PER_JOB = 100  # most dependents, dependencies and executions read per job
RESULTS_PER_JOB = 20  # newest results read per job (rq keeps about 10)
POSITION_SCAN = 100_000  # how deep LPOS looks for a queued job's position
CRON_LIMIT = 200  # most cron jobs and cron schedulers read
CRON_HISTORY = 5  # newest spawned jobs read per cron job


def _around(build: Callable[[str], str]) -> tuple[str, str]:
    """The text before and after the name in a key template (for keys built inside Lua)."""
    prefix, _, suffix = build('\x00').partition('\x00')
    return prefix, suffix


def _registry_affixes() -> list[str]:
    out: list[str] = []
    for kind in KINDS:
        out += [kind, *keys.registry(kind, '\x00').split('\x00')]
    return out


EXECUTION_PREFIX = keys.execution('\x00', '').partition('\x00')[0]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors='replace') if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A flat ``[field, value, …]`` reply as a dict with text keys (values left as sent)."""
    return {as_text(k): v for k, v in zip(flat[::2], flat[1::2])}


# -- the overview: queues, workers with their executions, suspension, throughput ---------------

OVERVIEW_SCRIPT = """
-- ARGV: queues set, queue prefix, workers set, worker prefix, suspended key, job prefix,
-- execution prefix, worker executions prefix and suffix, executions per worker, throughput
-- prefix, first minute, minutes, then (kind, prefix, suffix) per registry.
local queues_key, queue_prefix, workers_key, worker_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local suspended_key, job_prefix, exec_prefix = ARGV[5], ARGV[6], ARGV[7]
local wex_prefix, wex_suffix, per_worker = ARGV[8], ARGV[9], tonumber(ARGV[10])
local tp_prefix, first_minute, minutes = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
local regs = {}
for i = 14, #ARGV, 3 do regs[#regs + 1] = {ARGV[i + 1], ARGV[i + 2]} end
local queue_rows = {}
for _, qkey in ipairs(redis.call('SMEMBERS', queues_key)) do
    local row = {qkey, redis.call('LLEN', qkey)}
    if string.sub(qkey, 1, #queue_prefix) == queue_prefix then
        local name = string.sub(qkey, #queue_prefix + 1)
        for _, r in ipairs(regs) do row[#row + 1] = redis.call('ZCARD', r[1] .. name .. r[2]) end
    end
    queue_rows[#queue_rows + 1] = row
end
local worker_rows = {}
for _, wkey in ipairs(redis.call('SMEMBERS', workers_key)) do
    local data = redis.call('HGETALL', wkey)
    if #data > 0 and string.sub(wkey, 1, #worker_prefix) == worker_prefix then
        local name = string.sub(wkey, #worker_prefix + 1)
        local members = redis.call('SMEMBERS', wex_prefix .. name .. wex_suffix)
        table.sort(members)
        local rows = {}
        for i = 1, math.min(#members, per_worker) do
            local m = members[i]
            local job_id = string.match(m, '^([^:]*):')
            local ex = redis.call('HMGET', exec_prefix .. m, 'created_at', 'last_heartbeat')
            local job = {false, false}
            if job_id then job = redis.call('HMGET', job_prefix .. job_id, 'description', 'status') end
            rows[#rows + 1] = {m, ex[1], ex[2], job[1], job[2]}
        end
        worker_rows[#worker_rows + 1] = {wkey, data, #members, rows}
    end
end
local throughput = {}
for m = first_minute, first_minute + minutes - 1 do
    local data = redis.call('HGETALL', tp_prefix .. m)
    if #data > 0 then throughput[#throughput + 1] = {tostring(m), data} end
end
return {queue_rows, worker_rows, redis.call('EXISTS', suspended_key), throughput}
"""


@dataclass
class Execution:
    """One execution in flight, as the overview shows it."""

    job_id: str
    execution_id: str
    created_at: float | None
    last_heartbeat: float | None
    description: str | None  # None: the job hash is gone (the execution has just ended)
    status: str | None


@dataclass
class WorkerRow:
    name: str
    data: dict[str, str]
    execution_count: int  # all of them; ``executions`` holds at most EXECUTIONS_PER_WORKER
    executions: list[Execution]


@dataclass
class Overview:
    """Counts per queue (``queued`` and each registry), workers, suspension, throughput."""

    counts: dict[str, dict[str, int]]
    workers: list[WorkerRow]
    suspended: bool
    throughput: stats.Throughput
    odd_queue_keys: list[str] = field(default_factory=list)  # members of rq:queues without the prefix


def _worker_row(raw: Sequence[Any]) -> WorkerRow:
    wkey, data, total, rows = as_text(raw[0]), raw[1], int(raw[2]), raw[3]
    executions = []
    for member, created, beat, description, status in rows:
        job_id, _, execution_id = as_text(member).partition(':')
        executions.append(
            Execution(job_id, execution_id, _float(created), _float(beat), _text(description), _text(status))
        )
    executions.sort(key=lambda e: (e.created_at or 0.0, e.job_id))
    decoded = {k: _text(v) or '' for k, v in _pairs(data).items()}
    return WorkerRow(wkey[len(keys.WORKER_PREFIX) :], decoded, total, executions)


async def overview(conn: Redis, now: float, minutes: int = stats.MINUTES) -> Overview:
    """Everything the overview shows, in one script call: its commands grow with the number of
    queues, workers and executions in flight, never with the jobs in a queue or registry."""
    first = stats.minute_of(now) - minutes + 1
    args = [
        keys.QUEUES,
        keys.QUEUE_PREFIX,
        keys.WORKERS,
        keys.WORKER_PREFIX,
        keys.SUSPENDED,
        keys.JOB_PREFIX,
        EXECUTION_PREFIX,
        *_around(keys.worker_executions),
        EXECUTIONS_PER_WORKER,
        stats.KEY_PREFIX,
        first,
        minutes,
        *_registry_affixes(),
    ]
    queue_rows, worker_rows, suspended, throughput_rows = await scripts.run(conn, OVERVIEW_SCRIPT, [], args)
    counts: dict[str, dict[str, int]] = {}
    odd: list[str] = []
    for row in queue_rows:
        qkey = as_text(row[0])
        if not qkey.startswith(keys.QUEUE_PREFIX):
            odd.append(qkey)
            continue
        counts[qkey[len(keys.QUEUE_PREFIX) :]] = {'queued': int(row[1]), **dict(zip(KINDS, map(int, row[2:])))}
    tp_rows = [(int(as_text(m)), _pairs(data)) for m, data in throughput_rows]
    return Overview(
        counts=dict(sorted(counts.items())),
        workers=sorted((_worker_row(w) for w in worker_rows), key=lambda w: w.name),
        suspended=bool(suspended),
        throughput=stats.parse_throughput(tp_rows, first, minutes),
        odd_queue_keys=sorted(odd),
    )


# -- lists of jobs: a queue, a registry, a group -------------------------------------------------

LIST_SCRIPT = """
-- ARGV: mode (list, set, asc, desc, started), key, offset, count, job prefix, execution prefix,
-- then the job fields to read. Returns {total, {member, score, job fields, execution fields}}.
local mode, key = ARGV[1], ARGV[2]
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local job_prefix, exec_prefix = ARGV[5], ARGV[6]
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local total, members
local scored = true
if mode == 'list' then
    total = redis.call('LLEN', key)
    members = redis.call('LRANGE', key, offset, offset + count - 1)
    scored = false
elseif mode == 'set' then
    total = redis.call('SCARD', key)
    members = redis.call('SORT', key, 'ALPHA', 'LIMIT', offset, count)
    scored = false
elseif mode == 'asc' then
    total = redis.call('ZCARD', key)
    members = redis.call('ZRANGE', key, offset, offset + count - 1, 'WITHSCORES')
else
    total = redis.call('ZCARD', key)
    members = redis.call('ZREVRANGE', key, offset, offset + count - 1, 'WITHSCORES')
end
local step = 1
if scored then step = 2 end
local items = {}
for i = 1, #members, step do
    local member = members[i]
    local score = false
    if scored then score = members[i + 1] end
    local job_id, execution = member, false
    if mode == 'started' then
        local id = string.match(member, '^([^:]*):')
        if id then
            job_id = id
            execution = redis.call('HMGET', exec_prefix .. member, 'created_at', 'worker_name')
        end
    end
    items[#items + 1] = {member, score, redis.call('HMGET', job_prefix .. job_id, unpack(fields)), execution}
end
return {total, items}
"""


@dataclass
class ListedJob:
    """One row of a list of jobs: the fields of :data:`LIST_FIELDS` (``None`` when the job hash
    is gone), the registry score, and for an execution its start and worker."""

    job_id: str
    fields: dict[str, str | None]
    score: float | None = None
    execution_id: str | None = None
    execution_created_at: float | None = None
    execution_worker: str | None = None
    queue: str | None = None

    @property
    def exists(self) -> bool:
        return any(v is not None for v in self.fields.values())


@dataclass
class Page:
    total: int
    items: list[ListedJob]
    offset: int
    count: int


def _listed(member: Any, score: Any, values: Sequence[Any], execution: Any, started: bool) -> ListedJob:
    text = as_text(member)
    item = ListedJob(text, dict(zip(LIST_FIELDS, map(_text, values))), _float(score))
    if started:
        item.job_id, _, item.execution_id = text.partition(':')
        if execution:
            item.execution_created_at = _float(execution[0])
            item.execution_worker = _text(execution[1])
    return item


async def _list(conn: Redis, mode: str, key: str, offset: int, count: int) -> Page:
    if offset < 0 or count < 1:
        raise ValueError(f'a page needs offset >= 0 and count >= 1, not {offset} and {count}')
    args = [mode, key, offset, count, keys.JOB_PREFIX, EXECUTION_PREFIX, *LIST_FIELDS]
    total, rows = await scripts.run(conn, LIST_SCRIPT, [], args)
    return Page(int(total), [_listed(m, s, v, e, mode == 'started') for m, s, v, e in rows], offset, count)


async def registry_page(conn: Redis, queue_name: str, kind: str, offset: int, count: int) -> Page:
    """A page of one queue's jobs: ``queued`` in queue order (next to run first), ``scheduled``
    soonest due first, every other registry newest first (highest score first)."""
    if kind == 'queued':
        return await _list(conn, 'list', keys.queue(queue_name), offset, count)
    if kind not in KINDS:
        raise ValueError(f'no registry {kind!r}: one of queued, {", ".join(KINDS)}')
    mode = 'started' if kind == 'started' else 'asc' if kind == 'scheduled' else 'desc'
    return await _list(conn, mode, keys.registry(kind, queue_name), offset, count)


async def group_page(conn: Redis, name: str, offset: int, count: int) -> Page:
    """A page of a group's jobs, by id."""
    return await _list(conn, 'set', keys.group(name), offset, count)


GROUPS_SCRIPT = """
-- ARGV: groups set, group prefix, offset, count. Returns {total, {name, size}}.
local names = redis.call('SORT', ARGV[1], 'ALPHA', 'LIMIT', tonumber(ARGV[3]), tonumber(ARGV[4]))
local rows = {}
for _, name in ipairs(names) do rows[#rows + 1] = {name, redis.call('SCARD', ARGV[2] .. name)} end
return {redis.call('SCARD', ARGV[1]), rows}
"""


async def groups_page(conn: Redis, offset: int, count: int) -> tuple[int, list[tuple[str, int]]]:
    """The group names (``rq:groups``) by name, a page of them, each with its size (0: gone)."""
    total, rows = await scripts.run(conn, GROUPS_SCRIPT, [], [keys.GROUPS, keys.GROUP_PREFIX, offset, count])
    return int(total), [(as_text(name), int(size)) for name, size in rows]


SCHEDULED_SCRIPT = """
-- ARGV: queues set, queue prefix, scheduled prefix, scheduled suffix, job prefix, limit, fields.
-- Returns {{id, score, queue, job fields}} soonest first, and {queue, count} per queue.
local queue_prefix, sp, ss, job_prefix = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit = tonumber(ARGV[6])
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local found, totals = {}, {}
for _, qkey in ipairs(redis.call('SMEMBERS', ARGV[1])) do
    if string.sub(qkey, 1, #queue_prefix) == queue_prefix then
        local name = string.sub(qkey, #queue_prefix + 1)
        local n = redis.call('ZCARD', sp .. name .. ss)
        if n > 0 then
            totals[#totals + 1] = {name, n}
            local due = redis.call('ZRANGE', sp .. name .. ss, 0, limit - 1, 'WITHSCORES')
            for i = 1, #due, 2 do found[#found + 1] = {tonumber(due[i + 1]), name, due[i], due[i + 1]} end
        end
    end
end
table.sort(found, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
end)
local rows = {}
for i = 1, math.min(#found, limit) do
    local r = found[i]
    rows[#rows + 1] = {r[3], r[4], r[2], redis.call('HMGET', job_prefix .. r[3], unpack(fields))}
end
return {rows, totals}
"""


async def scheduled_page(conn: Redis, limit: int) -> tuple[list[ListedJob], dict[str, int]]:
    """The ``limit`` scheduled jobs due soonest over every queue (``score`` is the due time),
    and how many each queue has scheduled."""
    args = [keys.QUEUES, keys.QUEUE_PREFIX, *_around(lambda n: keys.registry('scheduled', n))]
    rows, totals = await scripts.run(conn, SCHEDULED_SCRIPT, [], [*args, keys.JOB_PREFIX, limit, *LIST_FIELDS])
    items = []
    for job_id, score, queue_name, values in rows:
        item = _listed(job_id, score, values, None, False)
        item.queue = as_text(queue_name)
        items.append(item)
    return items, dict(sorted((as_text(name), int(n)) for name, n in totals))


# -- one job -------------------------------------------------------------------------------------

JOB_SCRIPT = """
-- KEYS: job hash, dependents set, executions zset, results stream.
-- ARGV: job prefix, execution prefix, queue prefix, relations cap, results cap, position scan,
-- then (kind, prefix, suffix) per registry. Returns false when the job hash is gone.
local job_prefix, exec_prefix, queue_prefix = ARGV[1], ARGV[2], ARGV[3]
local cap, results_cap, scan = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local data = redis.call('HGETALL', KEYS[1])
if #data == 0 then return false end
local job_id = string.sub(KEYS[1], #job_prefix + 1)
local hash, origin, dep_json, status = {}, nil, nil, nil
for i = 1, #data, 2 do
    local f = data[i]
    if f ~= 'data' then
        hash[#hash + 1] = f
        hash[#hash + 1] = data[i + 1]
    end
    if f == 'origin' then origin = data[i + 1] elseif f == 'dependency_ids' then dep_json = data[i + 1]
    elseif f == 'status' then status = data[i + 1] end
end
local function statuses(ids)
    local rows = {}
    for _, id in ipairs(ids) do rows[#rows + 1] = {id, redis.call('HGET', job_prefix .. id, 'status')} end
    return rows
end
local dependencies, dependency_count = {}, 0
if dep_json then
    local ok, decoded = pcall(cjson.decode, dep_json)
    if ok and type(decoded) == 'table' then
        dependency_count = #decoded
        for i = 1, math.min(#decoded, cap) do
            if type(decoded[i]) == 'string' then dependencies[#dependencies + 1] = decoded[i] end
        end
    end
end
local registries, started_key = {}, nil
if origin and origin ~= '' then
    for i = 7, #ARGV, 3 do
        local key = ARGV[i + 1] .. origin .. ARGV[i + 2]
        if ARGV[i] == 'started' then started_key = key end
        local score = redis.call('ZSCORE', key, job_id)
        if score then registries[#registries + 1] = {ARGV[i], score} end
    end
end
local executions = {}
local ex = redis.call('ZRANGE', KEYS[3], 0, cap - 1, 'WITHSCORES')
for i = 1, #ex, 2 do
    local member = job_id .. ':' .. ex[i]
    local started = false
    if started_key then started = redis.call('ZSCORE', started_key, member) end
    executions[#executions + 1] = {ex[i], ex[i + 1], redis.call('HGETALL', exec_prefix .. member), started}
end
local position = false
-- Only a queued job has a position: a finished or failed one would cost a scan of the whole queue.
if origin and origin ~= '' and status == 'queued' then
    position = redis.pcall('LPOS', queue_prefix .. origin, job_id, 'MAXLEN', scan)
    if type(position) == 'table' then position = false end
end
return {
    hash,
    statuses(redis.call('SORT', KEYS[2], 'ALPHA', 'LIMIT', 0, cap)),
    redis.call('SCARD', KEYS[2]),
    statuses(dependencies),
    dependency_count,
    executions,
    redis.call('ZCARD', KEYS[3]),
    redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', results_cap),
    registries,
    position,
}
"""


@dataclass
class JobExecution:
    execution_id: str
    deadline: float | None  # the score in the job's executions index
    data: dict[str, str]  # the execution hash (empty: expired)
    started_score: float | None  # its score in the started registry (None: not there)


@dataclass
class JobPage:
    """One job as its page shows it: the raw hash (without ``data``), its relations with their
    statuses, its executions, the raw entries of its result stream, where it is."""

    job_id: str
    hash: dict[str, bytes]
    dependents: list[tuple[str, str | None]]
    dependent_count: int
    dependencies: list[tuple[str, str | None]]
    dependency_count: int
    executions: list[JobExecution]
    execution_count: int
    results: list[tuple[str, dict[str, bytes]]]  # newest first
    registries: dict[str, float]
    position: int | None

    def field(self, name: str) -> str | None:
        return _text(self.hash.get(name))


def _statuses(rows: Sequence[Any]) -> list[tuple[str, str | None]]:
    return [(as_text(i), _text(s)) for i, s in rows]


async def job_page(conn: Redis, job_id: str) -> JobPage | None:
    """Everything the job page shows, in one script call (``None``: no such job)."""
    ks = [keys.job(job_id), keys.dependents(job_id), keys.executions(job_id), keys.results(job_id)]
    args = [keys.JOB_PREFIX, EXECUTION_PREFIX, keys.QUEUE_PREFIX, RELATIONS_PER_JOB, RESULTS_PER_JOB, POSITION_SCAN]
    raw = await scripts.run(conn, JOB_SCRIPT, ks, [*args, *_registry_affixes()])
    if not raw:
        return None
    hash_, dependents, n_dependents, dependencies, n_dependencies, execs, n_execs, results, regs, position = raw
    return JobPage(
        job_id=job_id,
        hash={as_text(k): v for k, v in zip(hash_[::2], hash_[1::2])},
        dependents=_statuses(dependents),
        dependent_count=int(n_dependents),
        dependencies=_statuses(dependencies),
        dependency_count=int(n_dependencies),
        executions=[
            JobExecution(as_text(e), _float(s), {k: _text(v) or '' for k, v in _pairs(d).items()}, _float(st))
            for e, s, d, st in execs
        ],
        execution_count=int(n_execs),
        results=[(as_text(entry_id), {as_text(k): v for k, v in _pairs(flat).items()}) for entry_id, flat in results],
        registries={as_text(k): float(s) for k, s in regs},
        position=None if position is None else int(position),
    )


async def queue_counts(conn: Redis, queue_name: str) -> dict[str, int]:
    """One queue's ``queued`` count and each registry's size, in one pipeline."""
    async with conn.pipeline(transaction=False) as pipe:
        pipe.llen(keys.queue(queue_name))
        for kind in KINDS:
            pipe.zcard(keys.registry(kind, queue_name))
        found = await pipe.execute()
    return dict(zip(('queued', *KINDS), map(int, found)))


async def job_exists(conn: Redis, job_id: str) -> bool:
    return await jobs.exists(conn, job_id)


# -- cron ----------------------------------------------------------------------------------------

CRON_SCRIPT = """
-- ARGV: cron jobs zset, cron schedulers zset, scheduler prefix, history prefix and suffix, job
-- prefix, cap, history cap. Returns {cron job rows, scheduler rows, cron job total, scheduler total}.
local cap, hcap = tonumber(ARGV[7]), tonumber(ARGV[8])
local names = redis.call('ZREVRANGE', ARGV[1], 0, cap - 1, 'WITHSCORES')
local jobs = {}
for i = 1, #names, 2 do
    local history = ARGV[4] .. names[i] .. ARGV[5]
    local recent = redis.call('ZREVRANGE', history, 0, hcap - 1, 'WITHSCORES')
    local rows = {}
    for j = 1, #recent, 2 do
        rows[#rows + 1] = {recent[j], recent[j + 1], redis.call('HGET', ARGV[6] .. recent[j], 'status')}
    end
    jobs[#jobs + 1] = {names[i], names[i + 1], redis.call('ZCARD', history), rows}
end
local schedulers = {}
local found = redis.call('ZREVRANGE', ARGV[2], 0, cap - 1, 'WITHSCORES')
for i = 1, #found, 2 do
    schedulers[#schedulers + 1] = {found[i], found[i + 1], redis.call('HGETALL', ARGV[3] .. found[i])}
end
return {jobs, schedulers, redis.call('ZCARD', ARGV[1]), redis.call('ZCARD', ARGV[2])}
"""


@dataclass
class CronJobRow:
    name: str
    last_enqueue: float | None
    spawned: int
    recent: list[tuple[str, float | None, str | None]]  # (job id, enqueued at, status)


@dataclass
class CronSchedulerRow:
    name: str
    last_heartbeat: float | None
    data: dict[str, str]  # the record (empty: expired)


async def cron_page(conn: Redis) -> tuple[list[CronJobRow], list[CronSchedulerRow], int, int]:
    """rq 3.0's cron keys: each cron job's last enqueue and newest spawned jobs, each cron
    scheduler's record; and how many of each there are."""
    args = [
        keys.CRON_JOBS,
        keys.CRON_SCHEDULERS,
        keys.cron_scheduler(''),
        *_around(keys.cron_job_history),
        keys.JOB_PREFIX,
        CRON_LIMIT,
        CRON_HISTORY,
    ]
    job_rows, scheduler_rows, n_jobs, n_schedulers = await scripts.run(conn, CRON_SCRIPT, [], args)
    cron_jobs = [
        CronJobRow(as_text(n), _float(s), int(c), [(as_text(i), _float(t), _text(st)) for i, t, st in rows])
        for n, s, c, rows in job_rows
    ]
    schedulers = [
        CronSchedulerRow(as_text(n), _float(s), {k: _text(v) or '' for k, v in _pairs(d).items()})
        for n, s, d in scheduler_rows
    ]
    return cron_jobs, schedulers, int(n_jobs), int(n_schedulers)
