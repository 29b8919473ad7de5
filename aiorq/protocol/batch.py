"""A transaction as one Lua call: buffered commands, every key in ``KEYS``, run only if guards hold.

:class:`Batch` offers the subset of redis-py's pipeline API that the transition builders use
(``hset``, ``zadd``, ``xadd`` …), so the same builders fill a MULTI or a batch. Compared with
WATCH/MULTI/EXEC it costs one round trip and can make a write conditional on server state
("this execution is still in the started registry"), which a MULTI cannot.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from . import scripts
from .codec import encode

# ARGV[1] holds every item as "<length>:<bytes>" (one argument instead of ~80 keeps redis-py's
# per-argument packing off the hot path): guard count, guards (kind, key index, arg), then per
# command: name, argc, key mask ('1' where the argument is KEYS[index]), arguments.
# Guards: Z = ZSCORE(key, arg) exists; C = SCARD(key) == arg; E = EXISTS(key) == 1;
# F = HGET(key, arg) equals the item that follows.
# Returns 0 when all guards held and the commands ran, else the 1-based index of the failed guard.
GUARDED_BATCH_SCRIPT = """
local blob = ARGV[1]
local ARGV = {}
local pos, n = 1, #blob
while pos <= n do
    local colon = string.find(blob, ':', pos, true)
    local len = tonumber(string.sub(blob, pos, colon - 1))
    ARGV[#ARGV + 1] = string.sub(blob, colon + 1, colon + len)
    pos = colon + len + 1
end
local i = 1
local nguards = tonumber(ARGV[i]); i = i + 1
for g = 1, nguards do
    local kind, key, arg = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
    i = i + 3
    local ok
    if kind == 'Z' then
        ok = redis.call('ZSCORE', key, arg) ~= false
    elseif kind == 'C' then
        ok = redis.call('SCARD', key) == tonumber(arg)
    elseif kind == 'F' then
        ok = redis.call('HGET', key, arg) == ARGV[i]
        i = i + 1
    else
        ok = redis.call('EXISTS', key) == 1
    end
    if not ok then
        return g
    end
end
while i <= #ARGV do
    local name, argc, mask = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    i = i + 3
    local args = {}
    for a = 1, argc do
        if string.sub(mask, a, a) == '1' then
            args[a] = KEYS[tonumber(ARGV[i])]
        else
            args[a] = ARGV[i]
        end
        i = i + 1
    end
    redis.call(name, unpack(args))
end
return 0
"""


class Key(str):
    """Marks a command argument as a key."""


class Batch:
    """Commands to run atomically in one ``EVALSHA``, optionally behind guards."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._guards: list[Any] = []
        self._cmds: list[Any] = []
        self.explicit_transaction = True

    def __len__(self) -> int:
        return len(self._cmds)

    def _k(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            self._keys.append(key)
            idx = self._index[key] = len(self._keys)
        return idx

    def call(self, name: str, *args: Any) -> Batch:
        mask = ''.join('1' if isinstance(a, Key) else '0' for a in args)
        encoded = [self._k(a) if isinstance(a, Key) else a for a in args]
        self._cmds.append((name, len(args), mask, encoded))
        return self

    # -- guards --------------------------------------------------------------------------

    def guard_member(self, key: str, member: str) -> None:
        self._guards.append(('Z', self._k(key), member))

    def guard_scard(self, key: str, count: int) -> None:
        self._guards.append(('C', self._k(key), count))

    def guard_exists(self, key: str) -> None:
        self._guards.append(('E', self._k(key), ''))

    def guard_field(self, key: str, field: str, value: str) -> None:
        self._guards.append(('F', self._k(key), field, value))

    # -- the pipeline subset -------------------------------------------------------------

    def multi(self) -> None:
        pass

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None) -> Batch:
        pairs: list[Any] = []
        if key is not None:
            pairs += [key, value]
        for f, v in (mapping or {}).items():
            pairs += [f, v]
        return self.call('HSET', Key(name), *pairs)

    def hincrby(self, name: str, key: str, amount: int = 1) -> Batch:
        return self.call('HINCRBY', Key(name), key, amount)

    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> Batch:
        return self.call('HINCRBYFLOAT', Key(name), key, amount)

    def expire(self, name: str, time: int) -> Batch:
        return self.call('EXPIRE', Key(name), time)

    def persist(self, name: str) -> Batch:
        return self.call('PERSIST', Key(name))

    def delete(self, *names: str) -> Batch:
        return self.call('DEL', *[Key(n) for n in names])

    def zadd(self, name: str, mapping: dict[Any, Any], xx: bool = False) -> Batch:
        pairs: list[Any] = []
        for member, score in mapping.items():
            pairs += [score, member]
        return self.call('ZADD', Key(name), *(['XX'] if xx else []), *pairs)

    def zrem(self, name: str, *values: Any) -> Batch:
        return self.call('ZREM', Key(name), *values)

    def zremrangebyscore(self, name: str, min: Any, max: Any) -> Batch:
        return self.call('ZREMRANGEBYSCORE', Key(name), min, max)

    def sadd(self, name: str, *values: Any) -> Batch:
        return self.call('SADD', Key(name), *values)

    def srem(self, name: str, *values: Any) -> Batch:
        return self.call('SREM', Key(name), *values)

    def lpush(self, name: str, *values: Any) -> Batch:
        return self.call('LPUSH', Key(name), *values)

    def rpush(self, name: str, *values: Any) -> Batch:
        return self.call('RPUSH', Key(name), *values)

    def lrem(self, name: str, count: int, value: Any) -> Batch:
        return self.call('LREM', Key(name), count, value)

    def xadd(self, name: str, fields: dict[Any, Any], maxlen: int | None = None, approximate: bool = True) -> Batch:
        args: list[Any] = []
        if maxlen is not None:
            args += ['MAXLEN', '~', maxlen] if approximate else ['MAXLEN', maxlen]
        args.append('*')
        for f, v in fields.items():
            args += [f, v]
        return self.call('XADD', Key(name), *args)

    # -- running ---------------------------------------------------------------------------

    def _blob(self) -> bytes:
        items: list[Any] = [len(self._guards)]
        for guard in self._guards:
            items += guard
        for name, argc, mask, encoded in self._cmds:
            items += [name, argc, mask or '-', *encoded]
        parts: list[bytes] = []
        append = parts.append
        for item in items:
            kind = type(item)
            if kind is bytes:
                data = item
            elif kind is str:
                data = item.encode()
            elif kind is int:
                data = b'%d' % item
            else:
                data = encode(item)
            append(b'%d:' % len(data))
            append(data)
        return b''.join(parts)

    async def run(self, conn: Redis) -> int:
        """0 when the guards held and everything ran; else the index of the failed guard."""
        if not self._cmds and not self._guards:
            return 0
        return int(await scripts.run(conn, GUARDED_BATCH_SCRIPT, self._keys, [self._blob()]))
