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

__all__ = [
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
