"""Encodings, borrowed from rq's pure code: the job hash, statuses, results, timestamps.

rq's ``Job``/``Queue``/``Result`` objects are used here only as codecs. They are built on
:data:`NOIO`, a connection stand-in that refuses every attribute, so a stray call into rq's
blocking I/O fails loudly instead of stalling the event loop.
"""

from __future__ import annotations

import zlib
from base64 import b64encode
from typing import Any, NoReturn

from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import UNEVALUATED, JobStatus
from rq.job import Job as RQJob
from rq.queue import Queue as RQQueue
from rq.results import Result
from rq.utils import as_text

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
    return RQJob(job_id, connection=NOIO, serializer=serializer)


def restore_job(job_id: str, raw: dict[Any, Any], serializer: Any = None) -> RQJob:
    """Decode a job hash exactly as ``rq.job.Job.restore`` does; an empty hash is a missing job."""
    if not raw:
        raise NoSuchJobError(f'No such job: {job_id}')
    job = new_job(job_id, serializer)
    job.restore(raw)
    return job


def codec_queue(name: str, serializer: Any = None, default_timeout: Any = None) -> RQQueue:
    return RQQueue(name, connection=NOIO, serializer=serializer, default_timeout=default_timeout)


def parse_status(raw: bytes | str | None) -> JobStatus | None:
    return None if raw is None else JobStatus(as_text(raw))


def mapping(job: RQJob, include_meta: bool = True, include_result: bool = True) -> dict[Any, Any]:
    """The ``HSET`` mapping of ``Job.save``; ``status`` becomes its bare string value.

    A job the worker started carries the hash it read (``_aiorq_stored``): then only the fields
    whose encoded value differs are returned. Writing a field with the value it already has
    changes nothing, so the resulting hash is the one a full save leaves, for less traffic.
    """
    obj = job.to_dict(include_meta=include_meta, include_result=include_result)
    obj['status'] = JobStatus(obj['status']).value
    stored: dict[bytes, bytes] | None = getattr(job, '_aiorq_stored', None)
    if stored is None:
        return obj
    return {k: v for k, v in obj.items() if stored.get(k.encode()) != encode(v)}


def save(sink: Any, job: RQJob, include_meta: bool = True, include_result: bool = True) -> None:
    """``Job.save`` into a pipeline or batch (nothing to send when no field changed)."""
    fields = mapping(job, include_meta, include_result)
    if fields:
        sink.hset(keys.job(job.id), mapping=fields)


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
