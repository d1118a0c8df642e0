"""Parsing a product CSV upload (``name,price,sku``) into rows and per-line errors.

A problem with the file as a whole (not UTF-8, wrong header) raises
:class:`~upstream_example.errors.InvalidCsv`; a problem with one record is
yielded as a :class:`RowError` so the good records can still be imported.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from upstream_example.errors import InvalidCsv

HEADER = ("name", "price", "sku")

_PRICE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class ProductRow:
    line: int
    name: str
    price: float
    sku: str


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str

    def to_json(self) -> dict[str, object]:
        return {"line": self.line, "message": self.message}


def _parse_price(text: str) -> float | None:
    if not _PRICE.fullmatch(text):
        return None
    price = float(text)
    return price if math.isfinite(price) else None


def _parse_record(line: int, cells: list[str]) -> ProductRow | RowError:
    if len(cells) != len(HEADER):
        return RowError(line, f"expected {len(HEADER)} fields, got {len(cells)}.")
    name, price_text, sku = (cell.strip() for cell in cells)
    if not name:
        return RowError(line, "name is empty.")
    price = _parse_price(price_text)
    if price is None:
        return RowError(line, "price must be a non-negative decimal number.")
    if not sku:
        return RowError(line, "sku is empty.")
    return ProductRow(line, name, price, sku)


def read_product_csv(data: bytes) -> Iterator[ProductRow | RowError]:
    """Yield one result per non-blank record; ``line`` is where the record starts."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidCsv(f"The file is not UTF-8 (invalid byte at offset {exc.start}).") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    if header is None or tuple(cell.strip().lower() for cell in header) != HEADER:
        raise InvalidCsv("The first line must be the header name,price,sku.")
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader cannot resync after e.g. an oversized field; stop here.
            yield RowError(line, f"unreadable CSV ({exc}); the rest of the file was skipped.")
            return
        if any(cell.strip() for cell in cells):
            yield _parse_record(line, cells)
