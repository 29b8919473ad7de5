"""The loop watchdog: a thread that notices when the event loop stops turning, and why.

A coroutine job that never awaits (``while True: pass``, ``time.sleep(30)``) holds the whole
loop: its neighbours, its own time limit, signals and outcome writes all wait. The loop proves it
turns by a tick every :data:`TICK` seconds; the watchdog thread looks every :data:`CHECK` seconds.
When the ticks stop it walks the loop thread's stack to the frame of the execution that holds it
(the runner registers each execution's frame in :class:`RunningFrames`), and:

- once that execution is past its time limit, it interrupts it: the loop runs in the main
  thread (as ``aiorq worker`` runs it), so the watchdog sends :data:`INTERRUPT_SIGNAL` to the
  process; CPython runs the Python-level handler in the main thread between two bytecodes, or as
  soon as a blocking call such as ``time.sleep`` is interrupted by the signal, and the handler
  raises rq's ``JobTimeoutException`` there, in the job's own frame, after checking that the
  job's frame is still on the stack. The job fails with a timeout as under ``rq worker``, and the
  loop turns again. Code that swallows the exception, or a C call that does not return, is not
  stopped this way; a loop outside the main thread is never interrupted (signals reach only the
  main thread).
- once the loop has been held :data:`STALL_GRACE` seconds past that limit (past the largest
  limit in flight when no execution's frame is on the stack; never for a job without a limit),
  it declares the worker stalled: the heartbeat thread stops beating, so the executions' records
  expire and other workers' maintenance recovers them, as for a killed worker. It logs why.
- when the loop turns again, the block is logged (and counted by the metrics) with the job that
  held it; a stalled worker beats again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from rq.timeouts import JobTimeoutException

from aiorq.protocol.defaults import DEFAULT_JOB_TIMEOUT

from .execution import Execution

logger = logging.getLogger('aiorq.worker')

TICK = 0.1  # seconds between the loop's proofs of life
CHECK = 0.1  # seconds between the watchdog's looks
REPORT_AFTER = 1.0  # a block at least this long is logged and counted when it ends
REINTERRUPT = 1.0  # seconds between interrupts of a job that swallowed the last one
STALL_GRACE = 10.0  # seconds past the holding job's limit before heartbeats stop
DEFAULT_LIMIT = float(DEFAULT_JOB_TIMEOUT)  # for a block no execution can be blamed for
INTERRUPT_SIGNAL = signal.SIGALRM  # rq's own timeout signal: a job here cannot rely on it anyway


def timeout_message(limit: float) -> str:
    """rq's message for a job over its time limit."""
    return f'Task exceeded maximum timeout value ({int(limit)} seconds)'


@dataclass(eq=False)
class Running:
    """An execution whose coroutine frame may hold the loop, and its time limit."""

    ex: Execution
    frame: FrameType
    started: float  # time.monotonic()
    limit: float | None
    interrupted_at: float = field(default=0.0)

    @property
    def deadline(self) -> float:
        return math.inf if self.limit is None else self.started + self.limit


class RunningFrames:
    """The executions in flight by their runner frame: written on the loop, read by the
    watchdog thread (single dict operations, atomic under the GIL)."""

    def __init__(self) -> None:
        self._by_frame: dict[FrameType, Running] = {}

    def add(self, running: Running) -> None:
        self._by_frame[running.frame] = running

    def remove(self, running: Running) -> None:
        self._by_frame.pop(running.frame, None)

    def on_stack(self, frame: FrameType | None) -> Running | None:
        """The execution whose runner frame is ``frame`` or one of its callers."""
        by_frame = self._by_frame
        while frame is not None:
            running = by_frame.get(frame)
            if running is not None:
                return running
            frame = frame.f_back
        return None

    def largest_limit(self) -> float:
        """The largest time limit in flight (∞ when one has none; rq's default when none run)."""
        limits = [r.limit for r in list(self._by_frame.values())]
        if not limits:
            return DEFAULT_LIMIT
        return math.inf if None in limits else max(x for x in limits if x is not None)


BlockEnded = Callable[[float, 'Execution | None'], None]  # (seconds held, by which execution)


class LoopWatchdog(threading.Thread):
    """Watches one loop; see the module's docstring. ``on_block_ended(seconds, execution)`` runs on
    the loop after a block of at least :data:`REPORT_AFTER` seconds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        frames: RunningFrames,
        label: str,
        on_block_ended: BlockEnded | None = None,
    ) -> None:
        super().__init__(name=f'aiorq-watchdog-{label}', daemon=True)
        self.loop = loop
        self.frames = frames
        self.label = label
        self.on_block_ended = on_block_ended
        self.loop_thread = threading.get_ident()  # started from the loop's thread
        self.stopping = threading.Event()
        self.last_tick = time.monotonic()
        self.stalled = False  # read by the heartbeat thread: no beats while the loop is stuck
        # What holds the loop in the current block, since when, and the earlier holders of the
        # same block (jobs started one after another without the loop ticking in between);
        # shared by the loop's tick and the watchdog thread under the lock.
        self.lock = threading.Lock()
        self.blocker: Running | None = None
        self.held_since = 0.0
        self.earlier: list[tuple[float, Execution | None]] = []
        self._target: Running | None = None  # what the next interrupt signal is for
        self._tick_handle: asyncio.TimerHandle | None = None
        self._previous_handler: Any = None
        self._can_interrupt = False

    # -- on the loop ---------------------------------------------------------------------

    def begin(self) -> None:
        """Start ticking and watching (call on the loop's thread)."""
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(INTERRUPT_SIGNAL, self._on_signal)
            self._can_interrupt = True
        self.last_tick = time.monotonic()
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        self.start()

    def end(self) -> None:
        """Stop watching and restore the signal handler (call on the loop's thread)."""
        self.stopping.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._can_interrupt:
            signal.signal(INTERRUPT_SIGNAL, self._previous_handler or signal.SIG_DFL)
            self._can_interrupt = False

    def _tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            held = now - self.last_tick - TICK
            self.last_tick = now
            blocks = self.earlier
            if self.blocker is not None:
                blocks.append((now - self.held_since, self.blocker.ex))
            elif held >= REPORT_AFTER:
                blocks.append((held, None))
            self.blocker, self.earlier = None, []
        if self.stalled:
            self.stalled = False
            logger.warning('Worker %s: the event loop turns again; heartbeats resume', self.label)
        for seconds, ex in blocks:
            if seconds < REPORT_AFTER:
                continue
            if ex is not None:
                logger.warning(
                    'Worker %s: job %s (%s) held the event loop for %.1fs', self.label, ex.job_id, ex.queue, seconds
                )
            else:
                logger.warning('Worker %s: the event loop was blocked for %.1fs', self.label, seconds)
            if self.on_block_ended is not None:
                self.on_block_ended(seconds, ex)
        if not self.stopping.is_set():
            self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Runs in the main thread, where the loop is held: end the target job if it still holds it."""
        target, self._target = self._target, None
        if target is None:
            previous = self._previous_handler
            if callable(previous):
                previous(signum, frame)
            return
        if self.frames.on_stack(frame) is target:
            assert target.limit is not None
            raise JobTimeoutException(timeout_message(target.limit))

    def holding(self, frame: FrameType | None) -> bool:
        """Whether an execution whose frame is on this stack holds the loop (it has not ticked
        for a while). Called from a signal handler in the loop's thread."""
        held = time.monotonic() - self.last_tick > TICK + CHECK * 3
        return held and self.frames.on_stack(frame) is not None

    # -- in the watchdog thread ----------------------------------------------------------

    def run(self) -> None:
        while not self.stopping.wait(CHECK):
            now = time.monotonic()
            if now - self.last_tick > TICK + CHECK * 3:
                try:
                    self.inspect(now)
                except Exception:  # the watchdog must outlive anything odd it finds
                    logger.exception('Worker %s: loop watchdog failed', self.label)

    def inspect(self, now: float) -> None:
        """The loop has not ticked for a while: blame, interrupt, or declare it stalled."""
        tick = self.last_tick
        frame = sys._current_frames().get(self.loop_thread)
        running = self.frames.on_stack(frame)
        with self.lock:
            if self.last_tick != tick:
                return  # the loop turned meanwhile: what was found may not hold it any more
            if running is not None and running is not self.blocker:
                if self.blocker is not None:
                    self.earlier.append((now - self.held_since, self.blocker.ex))
                    self.held_since = now
                else:
                    self.held_since = tick
                self.blocker = running
        if running is not None:
            if now >= running.deadline and now - running.interrupted_at >= REINTERRUPT:
                self.interrupt(running, now)
            stall_at = running.deadline + STALL_GRACE
        else:
            stall_at = self.last_tick + self.frames.largest_limit() + STALL_GRACE
        if now >= stall_at and not self.stalled:
            self.stalled = True
            held = now - self.last_tick
            who = f'job {running.ex.job_id} ({running.ex.queue})' if running is not None else 'code outside any job'
            logger.error(
                'Worker %s: the event loop has been held for %.0fs by %s, past every time limit; '
                'heartbeats stop so other workers recover its jobs',
                self.label,
                held,
                who,
            )

    def interrupt(self, running: Running, now: float) -> None:
        first = running.interrupted_at == 0.0
        running.interrupted_at = now
        if not self._can_interrupt:
            if first:
                logger.error(
                    'Worker %s: job %s holds the event loop past its time limit; it cannot be interrupted '
                    '(the loop does not run in the main thread)',
                    self.label,
                    running.ex.job_id,
                )
            return
        logger.warning(
            'Worker %s: job %s holds the event loop past its time limit (%ss); interrupting it',
            self.label,
            running.ex.job_id,
            running.limit,
        )
        self._target = running
        signal.pthread_kill(threading.main_thread().ident or 0, INTERRUPT_SIGNAL)
