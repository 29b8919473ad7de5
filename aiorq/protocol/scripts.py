"""Running rq's Lua scripts verbatim over ``redis.asyncio``."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from rq.rate_limit import (
    ACQUIRE_AND_ENQUEUE_SCRIPT,
    CLEANUP_REGISTRY_SCRIPT,
    RELEASE_AND_ENQUEUE_SCRIPT,
    RELEASE_STALE_AND_ENQUEUE_SCRIPT,
)
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT, UNIQUE_SCHEDULE_SCRIPT

from . import keys

# Queue.empty()'s script is built by rq from the prefix at call time; this is the same text.
EMPTY_QUEUE_SCRIPT = f"""
            local prefix = "{keys.JOB_PREFIX}"
            local result_prefix = "{keys.RESULTS_PREFIX}"
            local q = KEYS[1]
            local count = 0
            while true do
                local job_id = redis.call("lpop", q)
                if job_id == false then
                    break
                end

                -- Delete the relevant keys
                redis.call("del", prefix..job_id, result_prefix..job_id)
                redis.call("del", prefix..job_id..":dependents")
                count = count + 1
            end
            return count
        """

# aiorq's one-round-trip enqueue of a job with no dependency, no rate limit and no uniqueness:
# the same writes as rq.Queue.enqueue_job's two transactions (SADD rq:queues; HSET status and
# the mapping, EXPIRE when the job has a ttl, then the push), in one atomic call. The hash ends
# identical: the mapping is sent with ``status`` first, as rq's separate HSET orders it.
ENQUEUE_SCRIPT = """
-- KEYS: rq:queues, job hash, queue list, job dependents set, job dependencies set
-- ARGV: job id, queue key, push side (L/R), ttl (0 = none), field1, value1, ...
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
local ttl = tonumber(ARGV[4])
if ttl > 0 then
    redis.call('EXPIRE', KEYS[2], ttl)
    redis.call('EXPIRE', KEYS[4], ttl)
    redis.call('EXPIRE', KEYS[5], ttl)
end
if ARGV[3] == 'L' then
    return redis.call('LPUSH', KEYS[3], ARGV[1])
end
return redis.call('RPUSH', KEYS[3], ARGV[1])
"""

# ``rq.Queue.enqueue_many`` for jobs without dependencies: its one MULTI (SADD rq:queues, then
# per job HSET status and mapping, EXPIRE when it has a ttl, push) as one atomic call.
ENQUEUE_MANY_SCRIPT = """
-- KEYS: rq:queues, queue list, then per job: hash, dependents set, dependencies set
-- ARGV: queue key, then per job: id, push side (L/R), ttl (0 = none), n, n items field/value
redis.call('SADD', KEYS[1], ARGV[1])
local a, k = 2, 3
while a <= #ARGV do
    local id, ttl, n = ARGV[a], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    redis.call('HSET', KEYS[k], unpack(ARGV, a + 4, a + 3 + n))
    if ttl > 0 then
        redis.call('EXPIRE', KEYS[k], ttl)
        redis.call('EXPIRE', KEYS[k + 1], ttl)
        redis.call('EXPIRE', KEYS[k + 2], ttl)
    end
    if ARGV[a + 1] == 'L' then
        redis.call('LPUSH', KEYS[2], id)
    else
        redis.call('RPUSH', KEYS[2], id)
    end
    a = a + 4 + n
    k = k + 3
end
return 1
"""

__all__ = [
    'ENQUEUE_SCRIPT',
    'ENQUEUE_MANY_SCRIPT',
    'ACQUIRE_AND_ENQUEUE_SCRIPT',
    'CLEANUP_REGISTRY_SCRIPT',
    'RELEASE_AND_ENQUEUE_SCRIPT',
    'RELEASE_STALE_AND_ENQUEUE_SCRIPT',
    'UNIQUE_ENQUEUE_SCRIPT',
    'UNIQUE_SCHEDULE_SCRIPT',
    'EMPTY_QUEUE_SCRIPT',
    'run',
    'sha',
    'queue_in',
]

_SHA: dict[str, str] = {}


def sha(source: str) -> str:
    """The SHA1 ``EVALSHA`` names a script by (cached per source)."""
    digest = _SHA.get(source)
    if digest is None:
        digest = _SHA[source] = hashlib.sha1(source.encode('utf-8')).hexdigest()
    return digest


_sha = sha


async def run(conn: Redis, source: str, keys_: list[str], args: list[Any]) -> Any:
    """``EVALSHA``, loading the script on ``NOSCRIPT`` (what redis-py ``Script`` objects do)."""
    sha = _sha(source)
    try:
        return await conn.evalsha(sha, len(keys_), *keys_, *args)
    except NoScriptError:
        await conn.script_load(source)
        return await conn.evalsha(sha, len(keys_), *keys_, *args)


async def queue_in(conn: Redis, pipe: Pipeline, source: str, keys_: list[str], args: list[Any]) -> None:
    """Buffer a script call in a transaction, making sure the server knows the script first."""
    sha = _sha(source)
    if not (await conn.script_exists(sha))[0]:
        await conn.script_load(source)
    pipe.evalsha(sha, len(keys_), *keys_, *args)
