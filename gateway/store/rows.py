"""Records as table rows, and rows as records.

A table's columns carry its record's field names, in the record's order, so one
``Rows`` per record writes and reads them: a tuple of strings is stored joined
(by newlines where an item may hold a space, such as a list of URIs; by spaces
elsewhere) and read back split, and a flag is stored as 0 or 1 and read back as a
bool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class Rows(Generic[R]):
    def __init__(
        self, record: type[R], lines: Iterable[str] = (), skip: Iterable[str] = ()
    ) -> None:
        self.record = record
        found = [f for f in fields(record) if f.name not in skip]  # type: ignore[arg-type]
        self.names = tuple(f.name for f in found)
        self.columns = ", ".join(self.names)
        self.places = ", ".join("?" * len(self.names))
        self.joiners = {
            f.name: "\n" if f.name in lines else " "
            for f in found
            if str(f.type).startswith("tuple[str")
        }
        self.flags = tuple(f.name for f in found if f.type == "bool")

    def read(self, row: Iterable[Any], **more: Any) -> R:
        """The record of a row selected as ``columns`` (``more``: fields not stored)."""
        values = dict(zip(self.names, row, strict=True))
        for name, joiner in self.joiners.items():
            values[name] = tuple(item for item in (values[name] or "").split(joiner) if item)
        for name in self.flags:
            values[name] = bool(values[name])
        return self.record(**values, **more)

    def values(self, record: R, *names: str) -> tuple[Any, ...]:
        """The record's columns as stored: every one, or those ``names`` in that order."""
        out = []
        for name in names or self.names:
            value = getattr(record, name)
            joiner = self.joiners.get(name)
            if joiner is not None:
                value = joiner.join(value)
            elif name in self.flags:
                value = int(value)
            out.append(value)
        return tuple(out)

    @staticmethod
    def assigned(*names: str) -> str:
        """``a = ?, b = ?`` for an UPDATE of those columns."""
        return ", ".join(f"{name} = ?" for name in names)
