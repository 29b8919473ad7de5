"""aiorq's dashboard: an ASGI app showing rq 3.0's data live (queues, registries, jobs, workers and
every execution in flight, scheduled and cron jobs, groups) with rq's own actions.

``aiorq.web.dashboard(connection, auth=...)`` returns the app to mount in a Starlette, FastAPI or
Litestar app; ``aiorq dashboard --url redis://…`` serves it with uvicorn. Needs the ``web`` extra
(``pip install 'aiorq[web]'``); see docs/dashboard.md.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a test without the extra
    raise ImportError(f"aiorq.web needs the web extra: pip install 'aiorq[web]' ({e})") from e

from .app import dashboard
from .security import BasicAuth

__all__ = ['BasicAuth', 'dashboard']
