"""One execution as the worker holds it: an attempt at a job, from its claim to its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from aiorq.protocol.codec import load_data
from aiorq.protocol.dequeue import Claimed
from aiorq.protocol.lean import Call, decode_call
from aiorq.protocol.workers import Beat


@dataclass(eq=False)
class Execution(Claimed):
    """A job this worker started (see ``protocol.dequeue.Claimed``: its lean record, rq's job
    built only when asked for), plus what the worker learns while it runs: whether a stop
    command ended it, and room for listeners' notes."""

    stopped: bool = False
    # The time of the last heartbeat Redis took for it (set by the heartbeat thread): what rq's
    # job object holds as its last_heartbeat when an outcome is written from it.
    last_beat: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _call: Call | None = field(default=None, repr=False)
    # What rq.get_current_job() and aiorq.get_current_job() return, each built once when asked for.
    current: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def claimed(cls, claim: Claimed) -> Execution:
        return cls(**{name: getattr(claim, name) for name in _CLAIMED_FIELDS})

    def call(self) -> Call:
        """The decoded call (function name, instance, arguments), decoded once."""
        call = self._call
        if call is None:
            if self.record.irregular:
                job = self.job
                load_data(job)  # its error names the job
                call = Call(job.func_name, job.instance, job.args, job.kwargs)
            else:
                call = decode_call(self.record, self.serializer)
            self._call = call
        return call

    @property
    def func_name(self) -> str:
        """The job's function name; a job whose data cannot be decoded is reported, not raised, here."""
        try:
            return self.call().func_name or ''
        except Exception:
            return '<undecodable>'

    def beat(self) -> Beat:
        """What the heartbeat thread needs of it (read once, on the thread that asks)."""
        return Beat(self.job_id, self.id, self.queue, self.started_at, self.timeout)


_CLAIMED_FIELDS = tuple(f.name for f in fields(Claimed) if f.name != '_lock')  # what a claim hands on
