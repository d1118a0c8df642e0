"""The pipe between the supervisor and each worker: the supervisor asks, the worker
answers from its event loop (nothing on the request path waits for it).

Messages are tuples sent with ``multiprocessing.connection``: the worker says
``("listening",)`` once its public listener is open; the supervisor asks
``(n, question, argument)`` (``metrics``, ``unready``, ``reload`` with the new
settings) and the worker answers ``(n, value)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

LISTENING = ("listening",)
ASK_TIMEOUT = 2.0  # seconds a worker has to answer


class WorkerSide:
    """Answers the supervisor's questions with ``answers[question]()``."""

    def __init__(
        self, conn: Connection, answers: dict[str, Callable[[Any], Awaitable[Any]]]
    ) -> None:
        self.conn = conn
        self.answers = answers
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop.add_reader(conn.fileno(), self._readable)

    def send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: the worker stops anyway
            self.conn.send(message)

    def _readable(self) -> None:
        try:
            number, question, argument = self.conn.recv()
        except (EOFError, OSError):
            self.loop.remove_reader(self.conn.fileno())
            return
        task = self.loop.create_task(self._answer(number, question, argument))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, number: int, question: str, argument: Any) -> None:
        self.send((number, await self.answers[question](argument)))

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.conn.fileno())
        self.conn.close()


class SupervisorSide:
    """Asks one worker; ``on_listening`` is told when it has opened its listener."""

    def __init__(self, conn: Connection, on_listening: Callable[[], None]) -> None:
        self.conn = conn
        self.on_listening = on_listening
        self.loop = asyncio.get_running_loop()
        self.numbers = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.loop.add_reader(conn.fileno(), self._readable)

    async def ask(self, question: str, argument: Any = None) -> Any:
        """The worker's answer; TimeoutError or ConnectionError if it gives none."""
        number = next(self.numbers)
        future = self.pending[number] = self.loop.create_future()
        try:
            self.conn.send((number, question, argument))
            return await asyncio.wait_for(future, ASK_TIMEOUT)
        except OSError as exc:
            raise ConnectionError("the worker is gone") from exc
        finally:
            self.pending.pop(number, None)

    def _readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.close()
            return
        if message == LISTENING:
            self.on_listening()
            return
        number, answer = message
        future = self.pending.get(number)
        if future is not None and not future.done():
            future.set_result(answer)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.conn.fileno())
        self.conn.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the worker is gone"))
