"""An explicit wait: how a pipeline step says it could not finish at once.

A step that may need to wait (a store lookup of a credential not yet cached, a
Redis counter, a wallet debit) returns its value when it has it, and a ``Wait``
when it must go out for it. The engine resumes the request once the wait is
over; everything else awaits it. So the common request runs from the socket's
callbacks with no task, and no step is written in a sync and an async copy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")


class Wait(Generic[T_co]):
    __slots__ = ("pending",)

    def __init__(self, pending: Awaitable[T_co]) -> None:
        self.pending = pending

    def then(self, step: Callable[[T_co], U | Wait[U]]) -> Wait[U]:
        """The wait for this one's value, passed through ``step``."""
        return Wait(_chain(self.pending, step))

    def __await__(self) -> Generator[Any, None, T_co]:
        return self.pending.__await__()


async def _chain(pending: Awaitable[T], step: Callable[[T], U | Wait[U]]) -> U:
    result = step(await pending)
    if isinstance(result, Wait):
        return await result.pending
    return result


async def resolved(value: T | Wait[T]) -> T:
    """A step's value, waited for where it has to be."""
    if isinstance(value, Wait):
        return await value.pending
    return value
