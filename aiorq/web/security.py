"""The dashboard's gates: an auth callable in front of every request, HTTP basic auth for the
CLI, and CSRF protection for every POST (a token in a cookie that a form or header must repeat)."""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Auth = Callable[[Request], 'bool | Awaitable[bool]']

CSRF_COOKIE = 'aiorq_csrf'
CSRF_FIELD = 'csrf'
CSRF_HEADER = 'x-csrf-token'
_TOKEN_LENGTH = 64  # secrets.token_hex(32)


class BasicAuth:
    """An ``auth=`` callable for HTTP basic auth with one username and password (what
    ``aiorq dashboard --username/--password`` uses); the browser asks for them."""

    def __init__(self, username: str, password: str, realm: str = 'aiorq dashboard') -> None:
        if not username or not password:
            raise ValueError('basic auth needs a username and a password')
        self.username = username.encode()
        self.password = password.encode()
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def __call__(self, request: Request) -> bool:
        scheme, _, value = request.headers.get('authorization', '').partition(' ')
        if scheme.lower() != 'basic':
            return False
        try:
            username, sep, password = base64.b64decode(value.strip(), validate=True).partition(b':')
        except (binascii.Error, ValueError):
            return False
        # Both compared, whatever the first says: the time taken tells nothing.
        user_ok = hmac.compare_digest(username, self.username)
        password_ok = hmac.compare_digest(password, self.password)
        return bool(sep) and user_ok and password_ok


class Guard:
    """Runs ``auth`` before the app on every HTTP request: 401 when it says no (with the
    challenge of :class:`BasicAuth`, so a browser asks for credentials)."""

    def __init__(self, app: ASGIApp, auth: Auth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and self.auth is not None:
            allowed: Any = self.auth(Request(scope, receive))
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                challenge = getattr(self.auth, 'challenge', None)
                headers = {'WWW-Authenticate': challenge} if challenge else {}
                await PlainTextResponse('Unauthorized', 401, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then :func:`set_csrf_cookie` must send it)."""
    token = request.cookies.get(CSRF_COOKIE, '')
    if len(token) == _TOKEN_LENGTH and all(c in '0123456789abcdef' for c in token):
        return token, False
    return secrets.token_hex(32), True


def set_csrf_cookie(response: Response, token: str, path: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path=path, httponly=True, samesite='strict')


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    """A POST is ours when it repeats the cookie's token in its form or in the header."""
    cookie = request.cookies.get(CSRF_COOKIE, '')
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, '')
    return len(cookie) == _TOKEN_LENGTH and hmac.compare_digest(cookie.encode(), sent.encode())
