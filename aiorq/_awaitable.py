"""Awaitable stand-ins for rq's I/O properties."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, NoReturn, TypeVar

T = TypeVar('T')


class AwaitableProperty(Generic[T]):
    """What ``queue.count`` or ``job.is_finished`` return: await it to get the value.

    The coroutine is created only on ``await``, so an unawaited access leaks nothing, and a
    truth test fails loudly instead of being silently true.
    """

    __slots__ = ('_factory', '_name')

    def __init__(self, factory: Callable[[], Awaitable[T]], name: str) -> None:
        self._factory = factory
        self._name = name

    def __await__(self) -> Generator[Any, None, T]:
        return self._factory().__await__()

    def __bool__(self) -> NoReturn:
        raise TypeError(f'{self._name} does Redis I/O and must be awaited: use `await {self._name}`')

    def __repr__(self) -> str:
        return f'<awaitable {self._name}>'


def refuse(what: str, instead: str) -> NoReturn:
    raise TypeError(f'{what} needs Redis I/O and cannot be synchronous in aiorq: use `{instead}`')
