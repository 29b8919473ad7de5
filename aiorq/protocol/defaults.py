"""rq's numbers, named once: the Python and the Lua of the protocol layer (through script
arguments) and the worker use these names, never the bare numbers (rq-protocol §4.7, §4.8, §6)."""

from __future__ import annotations

from rq.defaults import DEFAULT_FAILURE_TTL
from rq.queue import Queue as RQQueue

# A job without a timeout of its own runs under the queue's default (``Queue.DEFAULT_TIMEOUT``).
DEFAULT_JOB_TIMEOUT: int = RQQueue.DEFAULT_TIMEOUT  # 180 s
# rq adds this to every heartbeat TTL (``Worker.get_heartbeat_ttl``, the worker record's TTL).
HEARTBEAT_SLACK = 60
# A job's executions index (``rq:executions:<id>``) outlives its execution's deadline by this much.
EXECUTIONS_SLACK = 60
# A dead worker's record stays this long after ``register_death``.
DEATH_TTL = 60
# Failed jobs and their registry entries stay a year unless the job says otherwise.
FAILURE_TTL: int = DEFAULT_FAILURE_TTL
# An id seen twice this far apart in the intermediate list without an execution is stuck.
STUCK_AFTER = 60
# Retries of anything that waits for Redis double from 1 s up to this cap (rq's
# ``max_connection_wait_time``).
BACKOFF_CAP = 60.0


def job_timeout(timeout: int | float | None) -> int | float:
    """A job's time limit as rq reads it: its own, else the default (-1 means none)."""
    return timeout or DEFAULT_JOB_TIMEOUT
