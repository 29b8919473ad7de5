"""Script calls that share round trips: concurrent callers' ``EVALSHA`` commands go out in one
write on one pooled connection, and each caller gets its own reply.

redis-py spends more Python time on a command (pool checkout, retries, observability hooks,
packing) than an enqueue spends on its own work, and 100 enqueues in flight would each take
a connection of their own. Here the first caller sends its command at once; callers arriving
while a send is in flight are queued and go out together in the next write. Each script is
atomic on its own, so sending several in one write changes nothing about what each does.

Only scripts whose retry is harmless go through here (see ``ENQUEUE_SCRIPT``): a connection
error is passed to every caller of the write it broke, and the caller decides. Nothing that may have run is
sent again; a pooled connection the server has closed is replaced before the write instead.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..connections import CheckedConnectionPool, reopen_if_closed
from . import scripts

_UNREAD: Any = object()
_RESP2 = (2, '2', None)


_c_pack: Any
try:  # hiredis (redis[hiredis], a dependency) packs in C, with the same rules for utf-8 text
    from hiredis import pack_command as _c_pack
except ImportError:  # pragma: no cover - an install without the extra
    _c_pack = None


def pack(args: tuple[Any, ...] | list[Any], encoding: str, errors: str) -> bytes:
    """RESP for one command: redis-py's encoding rules (bytes as is, str in the client's
    encoding, int and float by ``repr``), joined once instead of once per argument."""
    if _c_pack is not None and encoding == 'utf-8' and errors == 'strict':
        try:
            return _c_pack(tuple(args))
        except TypeError:
            pass  # a value it refuses: the code below names it
    parts = [b'*%d\r\n' % len(args)]
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode(encoding, errors)
        elif kind is bytes:
            data = arg
        elif kind is int:
            data = b'%d' % arg
        elif isinstance(arg, bytes):
            data = bytes(arg)
        elif isinstance(arg, str):
            data = arg.encode(encoding, errors)
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f'cannot send {kind.__name__} to Redis: {arg!r}')
        append(b'$%d\r\n%s\r\n' % (len(data), data))
    return b''.join(parts)


async def _connection(pool: Any) -> Any:
    """A connected connection from the client's pool (redis-py before 5.3 wants a command name),
    never one the server has already closed: these sends are never repeated (a lost reply is
    the caller's to resolve), so a dead connection must be found before the write, whatever
    pool the client has (see :class:`aiorq.connections.CheckedConnectionPool`)."""
    try:
        call = pool.get_connection()
    except TypeError:
        call = pool.get_connection('EVALSHA')
    connection = await call
    if not isinstance(pool, CheckedConnectionPool):  # that pool has checked it already
        try:
            await reopen_if_closed(connection)
        except BaseException:
            await pool.release(connection)
            raise
    return connection


def _never() -> bool:
    return False


async def _unread(connection: Any) -> bool:
    """The pool's checkout check: data nobody asked for is waiting (or the server closed)."""
    check = getattr(connection, 'can_read', None) or connection.can_read_destructive  # renamed in redis-py 8
    try:
        return bool(await check())
    except (RedisConnectionError, OSError):
        return True


class _Call:
    __slots__ = ('source', 'packed', 'future', 'reply')

    def __init__(self, source: str, packed: bytes, future: asyncio.Future[Any] | None):
        self.source = source
        self.packed = packed
        self.future = future
        self.reply: Any = _UNREAD


class _Sender:
    """One per client: at most one write in flight; callers arriving meanwhile wait for the next."""

    def __init__(self, client: Redis, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.drainer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        kwargs = client.connection_pool.connection_kwargs
        self.encoding = kwargs.get('encoding', 'utf-8')
        self.errors = kwargs.get('encoding_errors', 'strict')
        self.busy = False
        self.queued: list[_Call] = []
        # The connection of the last write, kept until the loop's next turn: a caller that sends
        # again at once (a loop of awaited enqueues) skips the pool's checkout and release.
        self.held: Any = None
        self.giving_back = False
        self.releaser: asyncio.Task[Any] | None = None  # held, as the drainer

    async def call(self, source: str, keys: list[str], args: list[Any]) -> Any:
        packed = pack(('EVALSHA', scripts.sha(source), len(keys), *keys, *args), self.encoding, self.errors)
        if self.busy:
            call = _Call(source, packed, self.loop.create_future())
            self.queued.append(call)
            return await call.future  # type: ignore[misc]
        call = _Call(source, packed, None)
        self.busy = True
        try:
            await self._send([call])
            await self._resend_forgotten([call])
        finally:
            self._next()
        return self._settle(call)

    def _next(self) -> None:
        if self.queued:
            self.drainer = self.loop.create_task(self._drain())
        else:
            self.busy = False

    async def _drain(self) -> None:
        try:
            while self.queued:
                batch, self.queued = self.queued, []
                await self._send(batch)
                await self._resend_forgotten(batch)
                for call in batch:
                    future = call.future
                    assert future is not None  # every queued call has one
                    try:
                        value = self._settle(call)
                    except Exception as e:  # handed to its caller
                        if not future.done():
                            future.set_exception(e)
                    else:
                        if not future.done():
                            future.set_result(value)
        finally:
            self.busy = False

    async def _send(self, batch: list[_Call]) -> None:
        """One write, one reply per call, kept on the call (an error reply or a broken
        connection as the exception its caller gets)."""
        pool = self.client.connection_pool
        try:
            connection = await self._checkout(pool)
        except Exception as e:
            for call in batch:
                call.reply = e
            return
        kept = False
        try:
            await connection.send_packed_command(b''.join(c.packed for c in batch))
            for call in batch:
                try:
                    call.reply = await connection.read_response()
                except ResponseError as e:  # a reply, read whole: the stream is still in step
                    call.reply = e
            self._hold(connection)  # every reply read: in step for the next write
            kept = True
        except BaseException as e:
            # A write or read cut short leaves the connection's stream out of step.
            await connection.disconnect()
            for call in batch:
                if call.reply is _UNREAD:
                    call.reply = e if isinstance(e, Exception) else RedisConnectionError(f'send interrupted: {e!r}')
            if not isinstance(e, Exception):
                raise
        finally:
            if not kept:
                await pool.release(connection)

    async def _checkout(self, pool: Any) -> Any:
        """The connection for the next write: the one still held from the last write, else one
        from the pool. A held connection gets the checks the pool's checkout gives: connected,
        not closed by the server (checked before every write, see ``reopen_if_closed``), no
        unread data: every reply to the last write was read, and a RESP2 server sends nothing
        else; a RESP3 one may push messages, so its connection is checked as the pool checks."""
        connection, self.held = self.held, None
        if connection is None:
            return await _connection(pool)
        if getattr(connection, 'should_reconnect', _never)():  # redis-py 8: the pool's release renews it
            await pool.release(connection)
            return await _connection(pool)
        try:
            if connection.is_connected:
                await reopen_if_closed(connection)
                if getattr(connection, 'protocol', 2) not in _RESP2 and await _unread(connection):
                    await connection.disconnect()  # not in step: start afresh
            if not connection.is_connected:
                await connection.connect()
        except BaseException:
            await pool.release(connection)
            raise
        return connection

    def _hold(self, connection: Any) -> None:
        """Keep ``connection`` for a write that starts before the loop's next turn; give it back
        to the pool on that turn."""
        self.held = connection
        if not self.giving_back:
            self.giving_back = True
            self.loop.call_soon(self._give_back)

    def _give_back(self) -> None:
        self.giving_back = False
        connection, self.held = self.held, None
        if connection is not None:
            self.releaser = self.loop.create_task(self.client.connection_pool.release(connection))

    async def _resend_forgotten(self, batch: list[_Call]) -> None:
        """Calls refused with NOSCRIPT (a restarted or flushed server) ran nothing: load their
        scripts once and send them again together."""
        forgotten = [c for c in batch if isinstance(c.reply, NoScriptError)]
        if not forgotten:
            return
        try:
            for source in {c.source for c in forgotten}:
                await self.client.script_load(source)
        except Exception as e:
            for call in forgotten:
                call.reply = e
            return
        for call in forgotten:
            call.reply = _UNREAD
        await self._send(forgotten)

    @staticmethod
    def _settle(call: _Call) -> Any:
        reply = call.reply
        if isinstance(reply, Exception):
            raise reply
        return reply


_SENDERS: weakref.WeakKeyDictionary[Redis, _Sender] = weakref.WeakKeyDictionary()


async def run_script(client: Redis, source: str, keys: list[str], args: list[Any]) -> Any:
    """:func:`scripts.run`, sharing round trips with concurrent callers on the same client."""
    if client.single_connection_client:
        return await scripts.run(client, source, keys, args)
    loop = asyncio.get_running_loop()
    sender = _SENDERS.get(client)
    if sender is None or sender.loop is not loop:  # a client reused under a new loop starts afresh
        sender = _SENDERS[client] = _Sender(client, loop)
    return await sender.call(source, keys, args)


async def blocking_command(
    client: Redis, args: tuple[Any, ...], wait: float, client_id: Callable[[int], None] | None = None
) -> Any:
    """One command that waits in Redis (``XREAD BLOCK``) on a pooled connection, its reply read
    with ``wait`` as the time limit instead of the client's ``socket_timeout`` (redis.asyncio's
    default, 5 s, would cut a longer wait; a connection of its own per wait costs a handshake).
    The raw reply is returned (RESP2 or RESP3 shape, as the connection speaks).

    ``client_id``, when given, is told the connection's ``CLIENT ID`` (for ``CLIENT UNBLOCK``):
    sent in the same write just before the command, so it names the connection the command
    blocks on, without a round trip of its own; Redis runs both in one go, so when the id is
    known the command is already waiting."""
    kwargs = client.connection_pool.connection_kwargs
    encoding, errors = kwargs.get('encoding', 'utf-8'), kwargs.get('encoding_errors', 'strict')
    packed = pack(args, encoding, errors)
    if client_id is not None:
        packed = pack(('CLIENT', 'ID'), encoding, errors) + packed
    pool = client.connection_pool
    connection = await _connection(pool)
    try:
        await connection.send_packed_command(packed)
        try:
            # read_response's own timeout replaces the socket timeout, but when it expires it
            # returns None, like a nil reply: the outer limit, a second shorter, decides instead.
            if client_id is not None:
                client_id(int(await asyncio.wait_for(connection.read_response(timeout=wait + 1), wait)))
            return await asyncio.wait_for(connection.read_response(timeout=wait + 1), wait)
        except asyncio.TimeoutError:
            raise RedisTimeoutError(f'no reply from Redis within {wait:.0f} s') from None
    except BaseException:
        # Cut short (timeout, cancellation): the reply may still come, out of step with the next
        # command, so this connection goes.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
