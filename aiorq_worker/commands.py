"""Commands over ``rq:pubsub:<worker>``: shutdown, stop-job, stop-execution, kill-horse (§6.8)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from rq.command import parse_payload

from aiorq.protocol import keys
from aiorq.protocol.workers import Subscription

from .backoff import Backoff
from .inflight import InFlight

logger = logging.getLogger('aiorq.worker')

# A read for commands waits this long, then reads again. A read with no limit of its own is cut
# by the client's socket timeout on redis-py before 8.1 (a TimeoutError, then a resubscription,
# and a command published meanwhile is lost); a read with its own limit returns None instead.
LISTEN_WAIT = 30.0


class CommandListener:
    """Listens on worker ``name``'s channel: ``shutdown`` calls ``request_stop``; the stop commands
    go to the executions in flight."""

    def __init__(self, connection: Redis, name: str, inflight: InFlight, request_stop: Callable[[], None]) -> None:
        self.connection = connection
        self.name = name
        self.inflight = inflight
        self.request_stop = request_stop
        self.task: asyncio.Task[None] | None = None
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.listen())
        await asyncio.wait_for(self.ready.wait(), 10)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        if self.subscription is not None:
            await self.subscription.__aexit__()

    async def listen(self) -> None:
        channel = keys.pubsub_channel(self.name)
        backoff = Backoff()
        while True:
            try:
                async with Subscription(self.connection, [channel]) as self.subscription:
                    self.ready.set()
                    backoff.reset()
                    while True:
                        message = await self.subscription.next(timeout=LISTEN_WAIT)
                        if message is not None:
                            self.handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                wait = backoff.next()
                logger.error('Worker %s: pubsub connection lost (%s); resubscribing in %.0fs', self.name, e, wait)
                self.ready.set()
                await asyncio.sleep(wait)

    def handle(self, message: dict[str, Any]) -> None:
        try:
            payload = parse_payload(message)
        except Exception:
            logger.warning('Worker %s: unreadable command %r', self.name, message.get('data'))
            return
        command = payload.get('command')
        if command == 'shutdown':
            logger.info('Worker %s: received shutdown command', self.name)
            self.request_stop()
        elif command in ('stop-job', 'stop-execution'):
            # stop-job matches the id against every in-flight job; stop-execution is exact.
            inflight = self.inflight
            target = str(payload.get('job_id' if command == 'stop-job' else 'execution_id'))
            stopped = inflight.stop_job(target) if command == 'stop-job' else inflight.stop_execution(target)
            if stopped:
                outcome = 'stopping'
            elif target in inflight.early_stops:
                outcome = 'kept: a claim in flight may be starting it'
            else:
                outcome = 'ignored, not running here'
            logger.info('Worker %s: %s %s %s', self.name, command, target, outcome)
        elif command == 'kill-horse':
            # An asyncio worker has no horse; like rq's SimpleWorker it ignores the command.
            logger.info('Worker %s: kill-horse ignored (no work horse)', self.name)
        else:
            logger.info('Worker %s: unknown command %r ignored', self.name, command)
