"""Encodings, borrowed from rq's pure code: the job hash, statuses, results, timestamps.

rq's ``Job``/``Queue``/``Result`` objects are used here only as codecs. They are built on
:data:`NOIO`, a connection stand-in that refuses every attribute, so a stray call into rq's
blocking I/O fails loudly instead of stalling the event loop.
"""

from __future__ import annotations

import zlib
from base64 import b64encode
from datetime import datetime, timezone
from typing import Any, NoReturn

from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import UNEVALUATED, JobStatus
from rq.job import Job as RQJob
from rq.queue import Queue as RQQueue
from rq.results import Result
from rq.serializers import PickleSerializer
from rq.utils import as_text, str_to_date

from . import keys

__all__ = [
    'NOIO',
    'RQJob',
    'JobStatus',
    'Result',
    'new_job',
    'restore_job',
    'codec_queue',
    'parse_status',
    'mapping',
    'exc_string_payload',
    'text',
    'UNEVALUATED',
]


class _NoIO:
    """A truthy placeholder for rq's ``connection`` argument that forbids any use."""

    def __bool__(self) -> bool:
        return True

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(
            f'aiorq: an rq codec object tried blocking Redis I/O ({name!r}); use the awaitable aiorq API instead'
        )

    def __repr__(self) -> str:
        return '<aiorq NOIO>'


NOIO: Any = _NoIO()


def text(value: bytes | str | None) -> str | None:
    return None if value is None else as_text(value)


def new_job(job_id: str | None = None, serializer: Any = None) -> RQJob:
    # rq resolves None to the pickle serializer at once; the class itself costs a runtime
    # Protocol check per job (see codec_queue).
    return RQJob(job_id, connection=NOIO, serializer=None if serializer is PickleSerializer else serializer)


def restore_job(job_id: str, raw: dict[Any, Any], serializer: Any = None) -> RQJob:
    """Decode a job hash exactly as ``rq.job.Job.restore`` does; an empty hash is a missing job."""
    if not raw:
        raise NoSuchJobError(f'No such job: {job_id}')
    job = new_job(job_id, serializer)
    dates = [(name, raw[key]) for key, name in _DATE_KEYS.items() if raw.get(key)]
    if not dates:
        job.restore(raw)
        return job
    # rq parses these with strptime, the costliest part of a restore: they are parsed here
    # (same values) and rq restores the rest (its created_at fallback, now(), is overwritten).
    job.restore({k: v for k, v in raw.items() if k not in _DATE_KEYS})
    for name, value in dates:
        setattr(job, name, parse_date(value))
    return job


_DATE_NAMES = ('created_at', 'enqueued_at', 'started_at', 'ended_at', 'last_heartbeat')
_DATE_KEYS: dict[Any, str] = {**{n: n for n in _DATE_NAMES}, **{n.encode(): n for n in _DATE_NAMES}}


def parse_date(value: bytes | str) -> datetime:
    """``rq.utils.str_to_date``: rq's own format (``%Y-%m-%dT%H:%M:%S.%fZ``) without strptime;
    anything else (rq's older format, a malformed value and its error) by rq's function."""
    text = value.decode() if isinstance(value, bytes) else value
    if len(text) == 27 and text[26] == 'Z' and text[10] == 'T' and text[19] == '.' and text[20:26].isdigit():
        try:
            return datetime.fromisoformat(text[:26]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return str_to_date(value)


def codec_queue(name: str, serializer: Any = None, default_timeout: Any = None) -> RQQueue:
    queue = RQQueue(name, connection=NOIO, serializer=serializer, default_timeout=default_timeout)
    if queue.serializer is PickleSerializer:
        # rq resolves None to this same serializer at once, where the resolved class costs a
        # runtime Protocol check in every Job it creates.
        queue.serializer = None  # type: ignore[assignment]
    return queue


def parse_status(raw: bytes | str | None) -> JobStatus | None:
    return None if raw is None else JobStatus(as_text(raw))


def mapping(job: RQJob, include_meta: bool = True, include_result: bool = True) -> dict[Any, Any]:
    """The ``HSET`` mapping of ``Job.save``; ``status`` becomes its bare string value. (The
    worker's usual outcomes write only the changed fields without it: ``lean``'s encoders.)"""
    obj = job.to_dict(include_meta=include_meta, include_result=include_result)
    obj['status'] = JobStatus(obj['status']).value
    return obj


def checked_mapping(job: RQJob) -> dict[Any, Any]:
    """:func:`mapping`, naming the job and its serializer when an argument cannot be encoded
    (the one serialization an enqueue needs doubles as its check: nothing is written before it)."""
    try:
        return mapping(job)
    except Exception as e:
        raise TypeError(f'Job for {job.func_name} cannot be serialized with {job.serializer!r}: {e}') from e


def save(sink: Any, job: RQJob, include_meta: bool = True, include_result: bool = True) -> None:
    """``Job.save`` into a pipeline or batch."""
    sink.hset(keys.job(job.id), mapping=mapping(job, include_meta, include_result))


def encode(value: Any) -> bytes:
    """redis-py's encoding of a command argument (floats as ``repr``)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def exc_string_payload(exc_string: str) -> bytes:
    return b64encode(zlib.compress(exc_string.encode('utf-8')))


def load_data(job: RQJob) -> None:
    """Force lazy deserialization of ``data``, naming the job in the error."""
    try:
        job._deserialize_data()
    except DeserializationError as e:
        raise DeserializationError(f'Could not deserialize the data of job {job.id}: {e.__cause__!r}') from e
