"""A failed job's traceback as the job's author needs it: from the first frame that is not
aiorq's own plumbing (the runner, the thread pool, the event loop, the child process loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from types import TracebackType
from typing import Any

# Leading frames from these directories are aiorq's way of calling the job, not the job.
_PLUMBING = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, asyncio.__file__, concurrent.futures.__file__)
) + (os.path.abspath(threading.__file__),)


def _is_plumbing(tb: TracebackType) -> bool:
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PLUMBING)


def user_frames(exc_info: Any) -> Any:
    """``exc_info`` with the leading plumbing frames dropped from its traceback; unchanged when
    every frame is plumbing (an error of aiorq's own, such as a timeout, keeps its frames)."""
    exc_type, value, tb = exc_info
    first = tb
    while first is not None and _is_plumbing(first):
        first = first.tb_next
    if first is None:
        return exc_info
    return exc_type, value, first
