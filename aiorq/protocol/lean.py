"""The lean job codec: a claimed job hash decoded into what the worker needs, and the fields
an outcome writes back, without rq's ``Job`` (no ``restore``, no ``to_dict()``, no diff).

:func:`decode` reads the hash as stored (bytes keys and values, as ``HGETALL`` returns them)
into a :class:`JobRecord`: every field keeps rq's meaning, the call payload and ``meta`` stay
encoded (:func:`decode_call` decodes the call on demand with the job's serializer; ``meta`` is
never unpickled here), dates stay as their stored text. :func:`rq_job` builds rq's own job
from the same hash when something needs one (``get_current_job()``, callbacks, the fallback).

The encoders return the exact ``HSET`` fields rq 3.0 leaves changed in the job hash:
:func:`encode_start` (``Job.prepare_for_execution``), :func:`encode_success` and
:func:`encode_failure` (the ``save(include_meta=False, include_result=False)`` of rq's success
and failure handling: that mapping re-encodes every other field to the bytes already stored,
so only these differ; results live in the results stream, :func:`encode_result`, and nothing of
them stays in the hash). This holds only for a hash in rq 3.0's written form, hence the rule.

**The rule** (:func:`needs_rq_job`, reason in :attr:`JobRecord.fallback`). The lean path is used
unless one of these holds, in which case the worker builds rq's job with :func:`rq_job` and
takes rq's path for the whole execution:

* ``irregular``: a field rq's save would rewrite or rq's reader rejects: a field that
  ``to_dict()`` always writes is missing (``created_at``, ``data``, ``status``, ``started_at``,
  ``ended_at``, ``last_heartbeat``, ``worker_name``, ``group_id``, the callback names), or a
  value is not in the form ``to_dict()`` writes it back (``'+5'`` for ``5``, ``'2'`` for a
  flag, a date in rq's older format or not a date, JSON with other spacing, a lone legacy
  ``dependency_id``, an uncompressed ``data``, invalid UTF-8, an id rq refuses). An unknown
  ``status`` is irregular too: rq's reader raises on it, and :func:`rq_job` does the same.
  Fields rq 3.0 does not know are ignored, as rq ignores them (neither path writes them); so
  is a field name that is not UTF-8, on which rq's reader would fail. ``data`` is checked by
  its zlib header (default level): rq's save writes the payload re-compressed, the same bytes
  with the same zlib; a payload another zlib build compressed stays as stored here (same content).
* ``callbacks``: a success, failure or stopped callback is named: it gets rq's job, and may
  change it before rq saves it.
* ``retries``: ``retries_left > 0``: a failure becomes rq's exception retry (a full mapping).
* ``repeats``: ``repeats_left > 0``: a success saves the full mapping (``meta`` and the legacy
  ``result`` included) and enqueues or schedules the job again.
* ``webhooks``: sending them reads rq's job (``Webhook.send``).

Not part of the rule, because they do not change what the job hash receives: the serializer
(the lean path never serializes into the hash; the payload is decoded with the job's serializer
on both paths), dependencies of the job (``dependency_ids``...), rate limits, ``ttl``. Decided
at outcome time, not here: a returned ``Retry`` (rq's path, with :func:`rq_job`), dependents of
the job (the success write stays lean only while its dependents set is empty, as the existing
guarded write already checks), ``result_ttl == 0`` / ``failure_ttl == 0`` (the hash is deleted).
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from base64 import b64encode
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import JOB_ID_PATTERN, JobStatus
from rq.job import Job as RQJob
from rq.results import Result
from rq.serializers import DefaultSerializer
from rq.utils import import_attribute, utcformat

from .codec import restore_job

__all__ = [
    'Call',
    'JobRecord',
    'decode',
    'decode_call',
    'encode_failure',
    'encode_result',
    'encode_start',
    'encode_success',
    'needs_rq_job',
    'rq_job',
    'stamp',
]

Raw = Mapping[bytes, bytes]

# The fields Job.to_dict() writes whatever the job holds: a hash without one of them was not
# written by rq 3.0's save, and rq's save would add it.
ALWAYS = frozenset(
    k.encode()
    for k in (
        'created_at data status started_at ended_at last_heartbeat worker_name group_id '
        'success_callback_name failure_callback_name stopped_callback_name'
    ).split()
)
_STATUSES = {s.value.encode(): s for s in JobStatus}
_STARTED, _FINISHED = JobStatus.STARTED.value.encode(), JobStatus.FINISHED.value.encode()
# utcformat's output; days past the 28th are also checked against the month (datetime).
_DATE = re.compile(rb'[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z')
_ZLIB = b'x\x9c'  # zlib.compress at its default level, what to_dict() writes


class IrregularFieldError(Exception):
    """A stored value that is not in the form rq 3.0 writes it (internal to :func:`decode`)."""


class JobRecord(NamedTuple):
    """A claimed job as the worker needs it; field names and meanings are rq's ``Job``'s.

    Dates are the stored text (``None`` when empty); ``meta`` and ``webhooks`` the stored bytes.
    A claim with ``irregular`` set holds only ``id``, ``raw`` and ``fallback``: use :func:`rq_job`.
    """

    id: str
    raw: Raw
    fallback: str | None = None  # why rq's job is needed (see the rule), None for the lean path
    irregular: str | None = None  # the first field not in rq 3.0's written form
    data: bytes = b''  # the call payload as stored (zlib of the serialized call)
    status: JobStatus = JobStatus.CREATED
    origin: str = ''
    description: str | None = None
    timeout: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    ttl: int | None = None
    created_at: bytes | None = None
    enqueued_at: bytes | None = None
    started_at: bytes | None = None
    ended_at: bytes | None = None
    last_heartbeat: bytes | None = None
    worker_name: str | None = None
    group_id: str | None = None
    meta: bytes | None = None
    success_callback_name: str | None = None
    failure_callback_name: str | None = None
    stopped_callback_name: str | None = None
    # The rarely set fields (see _RARE), decoded only when one of them is in the hash.
    success_callback_timeout: int | None = None
    failure_callback_timeout: int | None = None
    stopped_callback_timeout: int | None = None
    retries_left: int | None = None
    number_of_retries: int | None = None
    retry_intervals: tuple[int, ...] | None = None
    enqueue_at_front_on_retry: bool = False
    repeats_left: int | None = None
    repeat_intervals: tuple[int, ...] | None = None
    dependency_ids: tuple[str, ...] = ()
    allow_dependency_failures: bool | None = None
    enqueue_at_front: bool | None = None
    rate_limit_key: str | None = None
    rate_limit_concurrency: int | None = None
    webhooks: bytes | None = None

    @property
    def has_callbacks(self) -> bool:
        return bool(self.success_callback_name or self.failure_callback_name or self.stopped_callback_name)

    @property
    def should_retry(self) -> bool:
        return self.retries_left is not None and self.retries_left > 0

    @property
    def repeating(self) -> bool:
        return self.repeats_left is not None and self.repeats_left > 0

    @property
    def has_rate_limit(self) -> bool:
        return bool(self.rate_limit_key and self.rate_limit_concurrency)

    def get_result_ttl(self, default: int) -> int:
        """``Job.get_result_ttl``: the job's own, else the worker's default."""
        return default if self.result_ttl is None else self.result_ttl


_RARE = frozenset(
    k.encode()
    for k in (
        'success_callback_timeout failure_callback_timeout stopped_callback_timeout retries_left '
        'number_of_retries retry_intervals enqueue_at_front_on_retry repeats_left repeat_intervals '
        'dependency_ids dependency_id allow_dependency_failures enqueue_at_front rate_limit_key '
        'rate_limit_concurrency webhooks exc_info'
    ).split()
)
_FIRST_RARE = JobRecord._fields.index('success_callback_timeout')
_NO_RARE = JobRecord('', {})[_FIRST_RARE:]
_RETRIES_LEFT, _REPEATS_LEFT, _WEBHOOKS = (
    JobRecord._fields.index(name) - _FIRST_RARE for name in ('retries_left', 'repeats_left', 'webhooks')
)


class Call(NamedTuple):
    """The decoded call payload: what rq's ``Job`` keeps in ``func_name``, ``instance``, ``args``
    and ``kwargs``."""

    func_name: str | None
    instance: Any
    args: Any
    kwargs: Any

    @property
    def func(self) -> Any:
        """``Job.func``: a method of ``instance``, else the function ``func_name`` names."""
        if self.func_name is None:
            return None
        if self.instance:
            return getattr(self.instance, self.func_name)
        # ``import_attribute`` starts with ``import_module`` of all but the last part and takes
        # the attribute when the module has it: for a module already imported, the same lookup.
        module_name, _, attribute = self.func_name.rpartition('.')
        module = sys.modules.get(module_name)
        if module is not None and attribute and hasattr(module, attribute):
            return getattr(module, attribute)
        return import_attribute(self.func_name)


def needs_rq_job(claimed: JobRecord) -> bool:
    """True when the lean path cannot be sure to write what rq writes (see the module's rule)."""
    return claimed.fallback is not None


def decode(job_id: str, raw: Raw) -> JobRecord:
    """The claimed hash as the worker needs it. An empty hash is a missing job
    (``NoSuchJobError``, as rq); any other hash decodes, an unusual one as irregular."""
    if not raw:
        raise NoSuchJobError(f'No such job: {job_id}')
    try:
        return _decode(job_id, raw)
    except IrregularFieldError as e:
        return JobRecord(job_id, raw, fallback=f'irregular {e}', irregular=str(e))


def _decode(job_id: str, raw: Raw) -> JobRecord:
    # Written out field by field: this runs once per job on the worker's hot path.
    v: bytes | None
    if not ALWAYS <= raw.keys():
        raise IrregularFieldError(min(ALWAYS - raw.keys()).decode())
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise IrregularFieldError('id')
    get = raw.get
    data = raw[b'data']
    if not data.startswith(_ZLIB):
        raise IrregularFieldError('data')
    status = _STATUSES.get(raw[b'status'])
    if status is None:
        raise IrregularFieldError('status')
    started = _date(b'started_at', raw[b'started_at'])
    v = raw[b'last_heartbeat']
    beat = started if v == started else _date(b'last_heartbeat', v)  # the start writes both alike
    callbacks = (
        _text(b'success_callback_name', v) if (v := raw[b'success_callback_name']) else None,
        _text(b'failure_callback_name', v) if (v := raw[b'failure_callback_name']) else None,
        _text(b'stopped_callback_name', v) if (v := raw[b'stopped_callback_name']) else None,
    )
    rare = _NO_RARE if _RARE.isdisjoint(raw) else _rare(raw)
    return JobRecord._make(
        (
            job_id,
            raw,
            _fallback(callbacks, rare),
            None,
            data,
            status,
            _text(b'origin', v) if (v := get(b'origin')) else '',
            _text(b'description', v) if (v := get(b'description')) else None,
            _int(b'timeout', v) if (v := get(b'timeout')) else None,
            _int(b'result_ttl', v) if (v := get(b'result_ttl')) else None,
            _int(b'failure_ttl', v) if (v := get(b'failure_ttl')) else None,
            _int(b'ttl', v) if (v := get(b'ttl')) else None,
            _date(b'created_at', raw[b'created_at'], required=True),
            _date(b'enqueued_at', v) if (v := get(b'enqueued_at')) else None,
            started,
            _date(b'ended_at', raw[b'ended_at']),
            beat,
            _text(b'worker_name', v) if (v := raw[b'worker_name']) else None,
            _text(b'group_id', v) if (v := raw[b'group_id']) else None,
            get(b'meta') or None,
            *callbacks,
            *rare,
        )
    )


def _fallback(callbacks: tuple[str | None, ...], rare: tuple[Any, ...]) -> str | None:
    """The rule's reason, from the callback names and the rare fields (in JobRecord's order)."""
    if callbacks[0] or callbacks[1] or callbacks[2]:
        return 'callbacks'
    if rare is _NO_RARE:
        return None
    retries_left, repeats_left, webhooks = rare[_RETRIES_LEFT], rare[_REPEATS_LEFT], rare[_WEBHOOKS]
    if retries_left is not None and retries_left > 0:
        return 'retries'
    if repeats_left is not None and repeats_left > 0:
        return 'repeats'
    if webhooks:
        return 'webhooks'
    return None


def _rare(raw: Raw) -> tuple[Any, ...]:
    """The rarely set fields, in JobRecord's order."""
    get = raw.get
    _check_exc_info(get(b'exc_info'))
    return (
        *_callback_timeouts(raw),
        _int(b'retries_left', get(b'retries_left')),
        _int(b'number_of_retries', get(b'number_of_retries')),
        _json_ints(b'retry_intervals', get(b'retry_intervals')),
        # written only when true; a stored '0' reads as False and stays as it is
        bool(_flag(b'enqueue_at_front_on_retry', get(b'enqueue_at_front_on_retry'))),
        _int(b'repeats_left', get(b'repeats_left')),
        _json_ints(b'repeat_intervals', get(b'repeat_intervals')),
        *_dependencies(raw),
        _text(b'rate_limit_key', get(b'rate_limit_key')),
        _int(b'rate_limit_concurrency', get(b'rate_limit_concurrency')),
        get(b'webhooks') or None,
    )


# -- field decoders: each returns what Job.restore makes of the value, or raises IrregularFieldError when
# -- to_dict() would not write the same bytes back (or restore would raise).


def _text(name: bytes, v: bytes | None) -> str | None:
    """A text field; empty is None (restore's ``as_text(v) if v else None``)."""
    if not v:
        return None
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise IrregularFieldError(name.decode()) from None


def _int(name: bytes, v: bytes | None) -> int | None:
    """An integer field, written back as ``str(int)``; empty is None."""
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        raise IrregularFieldError(name.decode()) from None
    if b'%d' % n != v:
        raise IrregularFieldError(name.decode())
    return n


def _flag(name: bytes, v: bytes | None) -> bool | None:
    """A ``'1'``/``'0'`` field; empty is None."""
    if not v:
        return None
    if v == b'1':
        return True
    if v == b'0':
        return False
    raise IrregularFieldError(name.decode())


def _date(name: bytes, v: bytes | None, required: bool = False) -> bytes | None:
    """A date in utcformat's form, kept as text; empty is None (``created_at`` must be set:
    rq's save would write the time of the save instead)."""
    if not v:
        if required:
            raise IrregularFieldError(name.decode())
        return None
    if _DATE_MATCH(v) is None:
        raise IrregularFieldError(name.decode())
    if v[8:10] > b'28':
        try:
            datetime.fromisoformat(v[:26].decode())
        except ValueError:  # no such day in that month
            raise IrregularFieldError(name.decode()) from None
    return v


_DATE_MATCH = _DATE.fullmatch


def _json_ints(name: bytes, v: bytes | None) -> tuple[int, ...] | None:
    """A JSON list of integers, written back with ``json.dumps``."""
    if not v:
        return None
    try:
        value = json.loads(v)
    except ValueError:
        raise IrregularFieldError(name.decode()) from None
    if not isinstance(value, list) or json.dumps(value).encode() != v:
        raise IrregularFieldError(name.decode())
    return tuple(value)


def _callback_timeouts(raw: Raw) -> tuple[int | None, int | None, int | None]:
    # restore parses these whenever the field exists: an empty one is an error there.
    out = []
    for name in (b'success_callback_timeout', b'failure_callback_timeout', b'stopped_callback_timeout'):
        v = raw.get(name)
        if v is not None and not v:
            raise IrregularFieldError(name.decode())
        out.append(_int(name, v))
    return out[0], out[1], out[2]


def _dependencies(raw: Raw) -> tuple[tuple[str, ...], bool | None, bool | None]:
    get = raw.get
    ids: tuple[str, ...] = ()
    listed, first = get(b'dependency_ids'), get(b'dependency_id')
    if listed:
        try:
            value = json.loads(listed)
        except ValueError:
            raise IrregularFieldError('dependency_ids') from None
        if not isinstance(value, list) or json.dumps(value).encode() != listed:
            raise IrregularFieldError('dependency_ids')
        ids = tuple(value)
        if ids and (first is None or first.decode(errors='replace') != ids[0]):
            raise IrregularFieldError('dependency_id')  # to_dict() writes the first id next to the list
    elif first:
        raise IrregularFieldError('dependency_id')  # the list-less legacy form: rq's save adds the list
    front = get(b'enqueue_at_front')
    if front is not None and not front:
        raise IrregularFieldError('enqueue_at_front')  # restore parses it whenever it exists
    return (
        ids,
        _flag(b'allow_dependency_failures', get(b'allow_dependency_failures')),
        _flag(b'enqueue_at_front', front),
    )


def _check_exc_info(exc: bytes | None) -> None:
    """The legacy ``exc_info`` (written by rq's requeue), unused by the worker, is still parsed
    by rq's reader: text it cannot decode makes the job unreadable there."""
    if not exc:
        return
    try:
        text = zlib.decompress(exc)
    except zlib.error:
        text = exc
    try:
        text.decode()
    except UnicodeDecodeError:
        raise IrregularFieldError('exc_info') from None


# -- on demand -------------------------------------------------------------------------------


def decode_call(claimed: JobRecord, serializer: Any = None) -> Call:
    """The call payload decoded with ``serializer`` (rq's pickle default for None), as rq's job
    decodes its ``data``; ``DeserializationError`` naming the job when it cannot be."""
    try:
        data = zlib.decompress(claimed.data)
    except zlib.error:
        data = claimed.data  # rq's fallback for an uncompressed payload
    try:
        func_name, instance, args, kwargs = (serializer or DefaultSerializer).loads(data)
    except Exception as e:
        raise DeserializationError(f'Could not deserialize the data of job {claimed.id}: {e!r}') from e
    return Call(func_name, instance, args, kwargs)


def rq_job(claimed: JobRecord, serializer: Any = None) -> RQJob:
    """rq's own job for the same hash (on the no-I/O codec connection), for callbacks,
    ``get_current_job()`` and the fallback; raises where ``Job.restore`` raises."""
    return restore_job(claimed.id, dict(claimed.raw), serializer)


# -- encoders --------------------------------------------------------------------------------


def stamp(dt: datetime) -> bytes:
    """``rq.utils.utcformat(dt)`` as bytes (a third of strftime's time)."""
    if dt.year < 1000:  # strftime does not pad the year
        return utcformat(dt).encode()
    return b'%04d-%02d-%02dT%02d:%02d:%02d.%06dZ' % (
        dt.year,
        dt.month,
        dt.day,
        dt.hour,
        dt.minute,
        dt.second,
        dt.microsecond,
    )


def encode_start(worker_name: str, at: datetime | bytes) -> dict[bytes, bytes]:
    """``Job.prepare_for_execution``'s ``HSET`` (rq writes ``last_heartbeat`` once more before it,
    with the same value in effect). The claim script writes these; the worker merges them into
    the hash the claim returns (the hash before the start) before :func:`decode`. ``at`` is the
    start time, or its stored text (a repeated claim returns the first one's)."""
    ts = at if isinstance(at, bytes) else stamp(at)
    return {b'last_heartbeat': ts, b'status': _STARTED, b'started_at': ts, b'worker_name': worker_name.encode()}


def encode_success(ended_at: datetime | bytes, last_heartbeat: datetime | None = None) -> dict[bytes, bytes]:
    """What rq's success save (``HSET status finished`` + the mapping without meta and result)
    changes in a started, regular hash. ``last_heartbeat`` defaults to ``ended_at`` (rq stamps it
    a moment later, aiorq with the same reading). ``started_at`` and ``worker_name`` are the ones
    the start wrote, so they are not repeated. With ``result_ttl`` 0 the job is deleted instead;
    a repeating job takes rq's path. ``ended_at`` may be given as its :func:`stamp`."""
    ended = ended_at if isinstance(ended_at, bytes) else stamp(ended_at)
    beat = ended if last_heartbeat is None else stamp(last_heartbeat)
    return {b'status': _FINISHED, b'ended_at': ended, b'last_heartbeat': beat}


def encode_failure(
    ended_at: datetime | None,
    last_heartbeat: datetime | None,
    *,
    status: JobStatus = JobStatus.FAILED,
    record: bool = True,
) -> dict[bytes, bytes]:
    """What rq's failure handling (``HSET status`` + ``FailedJobRegistry.add``'s save without
    meta and result: no ``exc_info`` either, the traceback goes to the results stream) changes
    in a started, regular hash. ``status`` is ``stopped`` for a stopped job. ``ended_at`` None
    (a stopped job) writes it empty. ``last_heartbeat`` None, when the worker stamped none at
    the end (a stop, a cold shutdown), leaves the stored one: the latest heartbeat, which is
    what rq's save writes back. ``record=False`` is ``disable_default_exception_handler``: only
    the status is written. A job with retries left takes rq's path (its retry rewrites the
    mapping); with ``failure_ttl`` 0 the job is deleted instead."""
    fields = {b'status': status.value.encode()}
    if record:
        fields[b'ended_at'] = b'' if ended_at is None else stamp(ended_at)
        if last_heartbeat is not None:
            fields[b'last_heartbeat'] = stamp(last_heartbeat)
    return fields


def encode_result(
    type_: Result.Type,
    *,
    serializer: Any = None,
    worker_name: str = '',
    return_value: Any = None,
    exc_string: str | None = None,
    execution_id: str | None = None,
    execution_started_at: datetime | None = None,
    execution_ended_at: datetime | None = None,
) -> dict[str, Any]:
    """``Result.serialize()``: the fields of the results-stream entry (``XADD``), without a job."""
    entry: dict[str, Any] = {'type': type_.value, 'worker_name': worker_name}
    if exc_string is not None:
        entry['exc_string'] = b64encode(zlib.compress(exc_string.encode())).decode()
    if return_value is not None:
        dumps = (serializer or DefaultSerializer).dumps
        try:
            payload = dumps(return_value)
        except Exception:
            payload = dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
        entry['return_value'] = b64encode(payload).decode()
    if execution_id:
        entry['execution_id'] = execution_id
    if execution_started_at:
        entry['execution_started_at'] = execution_started_at.timestamp()
    if execution_ended_at:
        entry['execution_ended_at'] = execution_ended_at.timestamp()
    return entry
