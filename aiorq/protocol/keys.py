"""Every Redis key name aiorq uses, built from rq's own templates.

rq reads ``RQ_KEY_PREFIX`` from the environment at import time and bakes it into class
attributes; deriving our names from those attributes keeps both libraries on one namespace.
"""

from __future__ import annotations

from rq import cron_job_registry, cron_scheduler_registry
from rq.command import PUBSUB_CHANNEL_TEMPLATE
from rq.cron import get_cron_job_history_key
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, ExecutionRegistry
from rq.group import Group
from rq.job import Job as RQJob
from rq.queue import Queue as RQQueue
from rq.rate_limit import RateLimitRegistry
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.suspension import WORKERS_SUSPENDED
from rq.worker import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

PREFIX = RQ_KEY_PREFIX
QUEUE_PREFIX = RQQueue.redis_queue_namespace_prefix
QUEUES = RQQueue.redis_queues_keys
JOB_PREFIX = RQJob.redis_job_namespace_prefix
WORKER_PREFIX = BaseWorker.redis_worker_namespace_prefix
WORKERS = REDIS_WORKER_KEYS
SUSPENDED = WORKERS_SUSPENDED
RL_KEYS = RateLimitRegistry.rl_keys_key
GROUPS = Group.REDIS_GROUP_KEY
GROUP_PREFIX = Group.REDIS_GROUP_NAME_PREFIX
CLEAN_GROUPS = Group.REDIS_GROUP_CLEANING_KEY
RESULTS_PREFIX = Result.get_key('')

REGISTRY_TEMPLATES = {
    'started': StartedJobRegistry.key_template,
    'finished': FinishedJobRegistry.key_template,
    'failed': FailedJobRegistry.key_template,
    'deferred': DeferredJobRegistry.key_template,
    'ready': ReadyJobRegistry.key_template,
    'scheduled': ScheduledJobRegistry.key_template,
    'canceled': CanceledJobRegistry.key_template,
}


def queue(name: str) -> str:
    return QUEUE_PREFIX + name


def queue_name(key: str) -> str:
    """Inverse of :func:`queue`; raises ``ValueError`` like ``rq.Queue.from_queue_key``."""
    if not key.startswith(QUEUE_PREFIX):
        raise ValueError(f'Not a valid RQ queue key: {key}')
    return key[len(QUEUE_PREFIX) :]


def intermediate(name: str) -> str:
    return queue(name) + INTERMEDIATE_SUFFIX


# rq's own keys under the queue prefix besides each queue's list (rq-protocol §2.2), as the
# suffix (or prefix) of a queue name whose list key would be that key.
INTERMEDIATE_SUFFIX = ':intermediate'
FIRST_SEEN_INFIX = INTERMEDIATE_SUFFIX + ':first_seen:'
COMPACT_PREFIX = '_compact:'


def reserved_queue_name(name: str) -> str | None:
    """Why a queue called ``name`` would share its list key with one of rq's keys under
    ``rq:queue:`` (``None``: it would not). rq accepts such names; their jobs are then failed as
    stuck in another queue's intermediate list, or a compaction renames its list over theirs."""
    if name.endswith(INTERMEDIATE_SUFFIX):
        owner = name[: -len(INTERMEDIATE_SUFFIX)]
        return f"its key {queue(name)} is rq's intermediate list of queue {owner!r}"
    if FIRST_SEEN_INFIX in name:
        owner = name[: name.index(FIRST_SEEN_INFIX)]
        return f"its key {queue(name)} has the shape of rq's stuck-job marker of queue {owner!r}"
    if name.startswith(COMPACT_PREFIX):
        return f"its key {queue(name)} has the shape of rq's temporary list for compacting a queue"
    return None


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def dependents(job_id: str) -> str:
    return JOB_PREFIX + job_id + ':dependents'


def dependencies(job_id: str) -> str:
    # The double colon is rq's: ``Job.dependencies_key`` is ``<job prefix>:<id>:dependencies``.
    return JOB_PREFIX + ':' + job_id + ':dependencies'


def results(job_id: str) -> str:
    return RESULTS_PREFIX + job_id


def registry(kind: str, name: str) -> str:
    return REGISTRY_TEMPLATES[kind].format(name)


def executions(job_id: str) -> str:
    return ExecutionRegistry.key_template.format(job_id)


def execution(job_id: str, execution_id: str) -> str:
    return f'{PREFIX}:execution:{job_id}:{execution_id}'


def worker(name: str) -> str:
    return WORKER_PREFIX + name


def worker_executions(name: str) -> str:
    return WORKER_EXECUTIONS_KEY_TEMPLATE.format(name)


def workers_by_queue(name: str) -> str:
    return WORKERS_BY_QUEUE_KEY % name


def pubsub_channel(worker_name: str) -> str:
    return PUBSUB_CHANNEL_TEMPLATE % worker_name


def scheduler_lock(queue_name: str) -> str:
    return RQScheduler.get_locking_key(queue_name)


def scheduler(name: str) -> str:
    return SCHEDULER_KEY_TEMPLATE % name


def scheduler_wakeup(queue_name: str) -> str:
    """Pub/sub channel (no key, no state): "a job was scheduled on this queue", for aiorq's
    schedulers to wake before their next poll. Stock rq never listens; nothing depends on it."""
    return f'{PREFIX}:scheduler-wakeup:{queue_name}'


def cleaning_lock(name: str) -> str:
    return f'{PREFIX}:clean_registries:{name}'


def group(name: str) -> str:
    return GROUP_PREFIX + name


def rl_config(key: str) -> str:
    return f'{PREFIX}:rl:{key}'


def rl_allowed(key: str) -> str:
    return f'{PREFIX}:rl:{key}:allowed'


def rl_waiting(key: str) -> str:
    return f'{PREFIX}:rl:{key}:rate_limited'


# Cron (rq-protocol §8). rq builds these from RQ_KEY_PREFIX in rq.cron and its two registries;
# the scheduler hash has no template in rq (``CronScheduler.key`` is an f-string property).
CRON_SCHEDULERS = cron_scheduler_registry.get_registry_key()
CRON_JOBS = cron_job_registry.get_registry_key()


def cron_scheduler(name: str) -> str:
    return f'{PREFIX}:cron_scheduler:{name}'


def cron_job_history(name: str) -> str:
    return get_cron_job_history_key(name)


# aiorq's own keys, under rq's prefix (an ACL confined to it allows them) in an ``aiorq:`` part
# that stock rq neither reads nor writes: finished and failed jobs per queue per minute, written
# by aiorq workers for the dashboard's chart (protocol/stats.py).
THROUGHPUT_PREFIX = f'{PREFIX}:aiorq:throughput:'


def throughput(minute: int) -> str:
    return f'{THROUGHPUT_PREFIX}{minute}'
