"""A transaction as one Lua call: buffered commands, every key in ``KEYS``, run only if guards hold.

:class:`Batch` offers the subset of redis-py's pipeline API that the transition builders use
(``hset``, ``zadd``, ``xadd`` …), so the same builders fill a MULTI or a batch. Compared with
WATCH/MULTI/EXEC it costs one round trip and can make a write conditional on server state
("this execution is still in the started registry"), which a MULTI cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from . import wire
from .codec import encode

# ARGV holds one or more independent sections, each:
# key base (what its key indexes are relative to: a section is built alone, then several share
# KEYS), guard count, guards; probe count, probes; command count, then per command: name, argc,
# key mask ('1' where the argument is KEYS[base + index]), arguments.
# A check is (kind, key index, arg[, value]): Z = ZSCORE(key, arg) exists; C = SCARD(key) == arg;
# E = EXISTS(key) == 1; N = EXISTS(key) == 0; M = SISMEMBER(key, arg) == 0; F = HGET(key, arg)
# equals the value that follows.
# Per section, the result is 0 when its guards held and its commands ran; when a guard failed,
# -1 if its probes all hold (the section's writes are already there: an earlier call committed
# them and its reply was lost), else the 1-based index of the failed guard (nothing written).
# Commands run under redis.pcall: an error reply (OOM, WRONGTYPE) stops the section and the
# result is "E<n>:<message>", commands before the n-th having run (Lua cannot roll them back);
# the other sections are unaffected, so a combined call never has to be re-run.
GUARDED_BATCH_SCRIPT = """
local pcall, tonumber, unpack, byte = redis.pcall, tonumber, unpack, string.byte
local i = 1
local base = 0
local function check()
    local kind, key, arg = ARGV[i], KEYS[base + tonumber(ARGV[i + 1])], ARGV[i + 2]
    i = i + 3
    local r
    if kind == 'Z' then
        r = pcall('ZSCORE', key, arg)
        return type(r) ~= 'table' and r ~= false
    elseif kind == 'C' then
        return pcall('SCARD', key) == tonumber(arg)
    elseif kind == 'F' then
        local value = ARGV[i]
        i = i + 1
        return pcall('HGET', key, arg) == value
    elseif kind == 'M' then
        return pcall('SISMEMBER', key, arg) == 0
    elseif kind == 'N' then
        return pcall('EXISTS', key) == 0
    end
    return pcall('EXISTS', key) == 1
end
local results = {}
local nargv = #ARGV
while i <= nargv do
    local failed = 0
    base = tonumber(ARGV[i]); i = i + 1
    local nguards = tonumber(ARGV[i]); i = i + 1
    for g = 1, nguards do
        if not check() and failed == 0 then failed = g end
    end
    local nprobes = tonumber(ARGV[i]); i = i + 1
    local applied = nprobes > 0
    for p = 1, nprobes do
        if failed == 0 then
            -- Probes only matter when a guard failed: skip them (an F check is one item longer).
            if ARGV[i] == 'F' then i = i + 4 else i = i + 3 end
        elseif not check() then
            applied = false
        end
    end
    local result = failed
    if failed ~= 0 and applied then result = -1 end
    local ncmds = tonumber(ARGV[i]); i = i + 1
    for c = 1, ncmds do
        local name, argc, mask = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
        i = i + 3
        if result == 0 then
            local args = {}
            for a = 1, argc do
                local v = ARGV[i + a - 1]
                if byte(mask, a) == 49 then v = KEYS[base + tonumber(v)] end  -- '1': a key index
                args[a] = v
            end
            local reply = pcall(name, unpack(args))
            if type(reply) == 'table' and reply.err then
                result = 'E' .. c .. ':' .. reply.err
            end
        end
        i = i + argc
    end
    results[#results + 1] = result
end
return results
"""

APPLIED = 0  # the guards held and every command ran
ALREADY_APPLIED = -1  # a guard failed, but the probes show an earlier call wrote the section


class SectionError(Exception):
    """A command of a section got an error reply. ``partial`` when commands before it ran."""

    def __init__(self, command: int, message: str) -> None:
        super().__init__(message)
        self.command = command
        self.partial = command > 1


def _section_result(raw: Any) -> int | SectionError:
    if isinstance(raw, int):
        return raw
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    index, _, message = text[1:].partition(':')
    return SectionError(int(index), message)


class Key(str):
    """Marks a command argument as a key."""


_MASKS = ['1' + '0' * n for n in range(32)]  # the mask of a command whose first argument is its one key


class Batch:
    """Commands to run atomically in one ``EVALSHA``, optionally behind guards.

    Guards, probes and commands are kept as the flat script arguments they become (key indexes
    relative to the batch's own keys), so running a batch, alone or with others, copies lists
    instead of re-encoding each command."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._guards: list[Any] = []
        self._nguards = 0
        self._probes: list[Any] = []
        self._nprobes = 0
        self._cmds: list[Any] = []
        self._ncmds = 0
        self.explicit_transaction = True

    def __len__(self) -> int:
        return self._ncmds

    def _k(self, key: str) -> int:
        idx = self._index.get(key)
        if idx is None:
            self._keys.append(key)
            idx = self._index[key] = len(self._keys)
        return idx

    def call(self, name: str, *args: Any) -> Batch:
        mask = ''.join('1' if isinstance(a, Key) else '0' for a in args)
        self._cmds += [name, len(args), mask or '-']
        self._cmds += [self._k(a) if isinstance(a, Key) else a for a in args]
        self._ncmds += 1
        return self

    def _keyed(self, name: str, key: str, *args: Any) -> Batch:
        """The common shape, one key then plain arguments, without per-argument checks."""
        n = len(args)
        self._cmds += [name, n + 1, _MASKS[n] if n < 32 else '1' + '0' * n, self._k(key), *args]
        self._ncmds += 1
        return self

    # -- guards --------------------------------------------------------------------------

    # Each guard returns its number: what :meth:`run` returns when that guard is the one that failed.

    def guard_member(self, key: str, member: str) -> int:
        return self._guard(('Z', self._k(key), member))

    def guard_scard(self, key: str, count: int) -> int:
        return self._guard(('C', self._k(key), count))

    def guard_exists(self, key: str) -> int:
        return self._guard(('E', self._k(key), ''))

    def guard_field(self, key: str, field: str, value: str) -> int:
        return self._guard(('F', self._k(key), field, value))

    def _guard(self, guard: tuple[Any, ...]) -> int:
        self._guards += guard
        self._nguards += 1
        return self._nguards

    # -- probes: when a guard fails, do these show the section's writes already in place? --

    def probe_field(self, key: str, field: str, value: Any) -> None:
        self._probes += ('F', self._k(key), field, value)
        self._nprobes += 1

    def probe_missing(self, key: str) -> None:
        self._probes += ('N', self._k(key), '')
        self._nprobes += 1

    def probe_not_member(self, key: str, member: str) -> None:
        self._probes += ('M', self._k(key), member)
        self._nprobes += 1

    # -- the pipeline subset -------------------------------------------------------------

    def multi(self) -> None:
        pass

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None) -> Batch:
        pairs: list[Any] = []
        if key is not None:
            pairs += [key, value]
        for f, v in (mapping or {}).items():
            pairs += [f, v]
        return self._keyed('HSET', name, *pairs)

    def hincrby(self, name: str, key: str, amount: int = 1) -> Batch:
        return self._keyed('HINCRBY', name, key, amount)

    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> Batch:
        return self._keyed('HINCRBYFLOAT', name, key, amount)

    def expire(self, name: str, time: int) -> Batch:
        return self._keyed('EXPIRE', name, time)

    def persist(self, name: str) -> Batch:
        return self._keyed('PERSIST', name)

    def delete(self, *names: str) -> Batch:
        if len(names) == 1:  # the common case, what ``call`` builds for it
            return self._keyed('DEL', names[0])
        return self.call('DEL', *[Key(n) for n in names])

    def zadd(self, name: str, mapping: dict[Any, Any], xx: bool = False) -> Batch:
        pairs: list[Any] = []
        for member, score in mapping.items():
            pairs += [score, member]
        return self._keyed('ZADD', name, *(['XX'] if xx else []), *pairs)

    def zrem(self, name: str, *values: Any) -> Batch:
        return self._keyed('ZREM', name, *values)

    def zremrangebyscore(self, name: str, min: Any, max: Any) -> Batch:
        return self._keyed('ZREMRANGEBYSCORE', name, min, max)

    def sadd(self, name: str, *values: Any) -> Batch:
        return self._keyed('SADD', name, *values)

    def srem(self, name: str, *values: Any) -> Batch:
        return self._keyed('SREM', name, *values)

    def lpush(self, name: str, *values: Any) -> Batch:
        return self._keyed('LPUSH', name, *values)

    def rpush(self, name: str, *values: Any) -> Batch:
        return self._keyed('RPUSH', name, *values)

    def lrem(self, name: str, count: int, value: Any) -> Batch:
        return self._keyed('LREM', name, count, value)

    def xadd(self, name: str, fields: dict[Any, Any], maxlen: int | None = None, approximate: bool = True) -> Batch:
        args: list[Any] = []
        if maxlen is not None:
            args += ['MAXLEN', '~', maxlen] if approximate else ['MAXLEN', maxlen]
        args.append('*')
        for f, v in fields.items():
            args += [f, v]
        return self._keyed('XADD', name, *args)

    def publish(self, channel: str, message: Any) -> Batch:
        return self.call('PUBLISH', channel, message)

    # -- running ---------------------------------------------------------------------------

    def _items(self, key_base: int) -> list[Any]:
        return [
            key_base, self._nguards, *self._guards, self._nprobes, *self._probes, self._ncmds, *self._cmds
        ]  # fmt: skip

    async def run(self, conn: Redis) -> int:
        """:data:`APPLIED`, :data:`ALREADY_APPLIED`, or the index of the failed guard; raises
        :class:`SectionError` when a command got an error reply."""
        if not self._ncmds and not self._nguards:
            return APPLIED
        result = (await run_batches(conn, [self]))[0]
        if isinstance(result, SectionError):
            raise result
        return result


_PLAIN = (str, bytes, int, float)


async def run_batches(conn: Redis, batches: list[Batch]) -> list[int | SectionError]:
    """Several independent batches in one script call; each keeps its own guards and result."""
    keys_: list[str] = []
    items: list[Any] = []
    for batch in batches:
        items += batch._items(len(keys_))
        keys_ += batch._keys
    # Items go out as arguments through aiorq's own packer (redis-py's costs more per argument
    # than the outcome's own work); anything else is encoded as the job hash encodes it.
    args = [item if type(item) in _PLAIN else encode(item) for item in items]
    return [_section_result(r) for r in await wire.run_script(conn, GUARDED_BATCH_SCRIPT, keys_, args)]


BatchRunner = Callable[['Batch'], Awaitable[int]]


class Combiner:
    """Coalesces batches submitted while a call is in flight into the next single script call.

    No artificial delay: the first batch goes out at once, and whatever arrives meanwhile rides
    together in the next call. Each section reports its own result (an error reply in one
    section leaves the others' results intact), so a combined call is never re-run: a section
    that committed is never applied twice. When the call itself fails (connection lost), every
    submitter gets the error and retries on its own; its probes then tell whether its section
    had committed before the reply was lost.
    """

    MAX_SECTIONS = 64

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self.pending: list[tuple[Batch, asyncio.Future[int]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def submit(self, batch: Batch) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((batch, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        while self.pending:
            group, self.pending = self.pending[: self.MAX_SECTIONS], self.pending[self.MAX_SECTIONS :]
            try:
                results = await run_batches(self.conn, [b for b, _ in group])
            except BaseException as e:
                for _, future in group:
                    if not future.done():
                        future.set_exception(e if isinstance(e, Exception) else ConnectionError(str(e)))
                if not isinstance(e, Exception):
                    raise
                continue
            for (_, future), result in zip(group, results):
                if future.done():
                    continue
                if isinstance(result, SectionError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
