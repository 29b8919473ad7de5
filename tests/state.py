"""Snapshots of a whole Redis database, normalised so stock rq's and aiorq's writes compare."""

from __future__ import annotations

import base64
import re
import time
import zlib
from typing import Any

import redis

# Keys a worker writes that are not the jobs' state: its own record, and aiorq's throughput
# history (rq:aiorq:throughput:*, the dashboard's; stock rq never writes a key under rq:aiorq:).
WORKER_KEYS = (b'rq:worker', b'rq:workers', b'rq:clean_registries', b'rq:aiorq:')

TS = re.compile(rb'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$')
# Fields that hold a clock reading; compared as "is a timestamp" (or empty).
CLOCK_FIELDS = {b'created_at', b'enqueued_at', b'started_at', b'ended_at', b'last_heartbeat', b'birth'}
STREAM_CLOCK = {b'execution_started_at', b'execution_ended_at'}
# Human-readable times inside failure texts (e.g. "... at 2026-11-27 21:58:10.620837+00:00").
TEXT_TIME = re.compile(rb'\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?')


def _stream_value(field: bytes, value: bytes) -> Any:
    if field in STREAM_CLOCK:
        return Near(float(value))
    if field == b'execution_id':
        return '<exec>'
    if field == b'exc_string' and value:
        text = zlib.decompress(base64.b64decode(value))
        # Tracebacks differ in their frames between workers; the final line names the error.
        last = [line for line in text.strip().splitlines() if line.strip()][-1:] or [b'']
        return ('exc', TEXT_TIME.sub(b'<time>', last[0]))
    return value


class Near:
    """A number read off the clock: equal to another within ``slack``."""

    def __init__(self, value: float, slack: float = 3.0) -> None:
        self.value = value
        self.slack = slack

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Near) and abs(self.value - other.value) <= max(self.slack, other.slack)

    def __repr__(self) -> str:
        return f'~{self.value:g}'


def _score(score: float, now: float) -> Any:
    if score in (float('inf'), float('-inf')) or abs(score) < 10**8:
        return score
    return ('now', Near(score - now))


def _hash_value(field: bytes, value: bytes) -> Any:
    if field in CLOCK_FIELDS:
        return '<ts>' if TS.match(value) else value
    if field == b'data':
        try:
            return ('zlib', zlib.decompress(value))
        except zlib.error:
            return value
    return value


def snapshot(conn: redis.Redis, ids: dict[str, str] | None = None) -> dict[Any, Any]:
    """Every key: type, ttl (approximate) and content. ``ids`` renames ids (e.g. generated uuids)."""
    now = time.time()
    out: dict[Any, Any] = {}
    for key in sorted(conn.keys('*')):
        kind = conn.type(key).decode()
        ttl = conn.ttl(key)
        ttl_v: Any = ttl if ttl < 0 else Near(ttl)
        content: Any
        if kind == 'hash':
            content = {f: _hash_value(f, v) for f, v in conn.hgetall(key).items()}
        elif kind == 'list':
            content = conn.lrange(key, 0, -1)
        elif kind == 'set':
            content = sorted(conn.smembers(key))
        elif kind == 'zset':
            content = {m: _score(s, now) for m, s in conn.zrange(key, 0, -1, withscores=True)}
        elif kind == 'stream':
            content = [{f: _stream_value(f, v) for f, v in fields.items()} for _, fields in conn.xrange(key)]
        elif kind == 'string':
            content = conn.get(key)
        else:
            content = kind
        out[key] = (kind, ttl_v, content)
    return renamed(out, ids) if ids else out


def renamed(snap: dict[Any, Any], ids: dict[str, str]) -> dict[Any, Any]:
    """``snap`` with the ids in keys, hash fields and values (but job data), list, set and sorted
    set members renamed (``ids``: old -> new), as :func:`snapshot` with ``ids`` takes it."""

    def rename(b: bytes) -> bytes:
        for old, new in ids.items():
            b = b.replace(old.encode(), new.encode())
        return b

    out: dict[Any, Any] = {}
    for key, (kind, ttl, content) in snap.items():
        if kind == 'hash':
            content = {
                rename(f): rename(v) if isinstance(v, bytes) and f != b'data' else v for f, v in content.items()
            }
        elif kind == 'list':
            content = [rename(v) for v in content]
        elif kind == 'set':
            content = sorted(rename(v) for v in content)
        elif kind == 'zset':
            content = {rename(m): s for m, s in content.items()}
        out[rename(key)] = (kind, ttl, content)
    return out


def diff(a: dict[Any, Any], b: dict[Any, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    problems = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            problems.append(f'only aiorq wrote {key!r}: {b[key]!r}')
        elif key not in b:
            problems.append(f'only rq wrote {key!r}: {a[key]!r}')
        elif a[key] != b[key]:
            ka, kb = a[key], b[key]
            if ka[0] == kb[0] == 'hash' and ka[1] == kb[1]:
                for f in sorted(set(ka[2]) | set(kb[2])):
                    if ka[2].get(f) != kb[2].get(f):
                        problems.append(f'{key!r} field {f!r}: rq {ka[2].get(f)!r} != aiorq {kb[2].get(f)!r}')
            else:
                problems.append(f'{key!r}: rq {ka!r} != aiorq {kb!r}')
    return problems
