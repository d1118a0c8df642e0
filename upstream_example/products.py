"""The products API of one organization: list, query with paging, CSV import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from upstream_example.errors import InvalidMultipart, PayloadTooLarge, ValidationError
from upstream_example.product_csv import ProductRow, RowError, read_product_csv
from upstream_example.state import STORE
from upstream_example.store import Product
from upstream_example.validation import (
    JsonObject,
    bounded_int,
    optional_number,
    optional_text,
    org_id,
    read_json_object,
    reject_unknown,
)

MAX_IMPORT_BYTES: Final = 10 * 1024 * 1024
UPLOAD_FIELD: Final = "file"
# Errors listed in an import answer; ``error_count`` still counts all of them.
MAX_LISTED_ERRORS: Final = 100

_QUERY_FIELDS = frozenset({"filter", "limit", "offset"})
_FILTER_FIELDS = frozenset({"name_contains", "min_price", "max_price"})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Filter:
    name_contains: str
    min_price: float | None
    max_price: float | None

    @classmethod
    def from_json(cls, value: object) -> _Filter:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValidationError("filter", "must be an object.")
        reject_unknown(value, _FILTER_FIELDS, "filter.")
        return cls(
            name_contains=(optional_text(value, "name_contains", "filter.") or "").casefold(),
            min_price=optional_number(value, "min_price", "filter."),
            max_price=optional_number(value, "max_price", "filter."),
        )

    def matches(self, product: Product) -> bool:
        return (
            self.name_contains in product.name.casefold()
            and (self.min_price is None or product.price >= self.min_price)
            and (self.max_price is None or product.price <= self.max_price)
        )


async def list_products(request: web.Request) -> web.Response:
    org = org_id(request)
    products = request.app[STORE].products(org)
    return web.json_response({"data": [p.to_json() for p in products]})


async def query_products(request: web.Request) -> web.Response:
    """``POST /products/query``: filter, then page; ``total`` counts before paging."""
    org = org_id(request)
    body: JsonObject = await read_json_object(request, empty_is_object=True)
    reject_unknown(body, _QUERY_FIELDS)
    product_filter = _Filter.from_json(body.get("filter"))
    limit = bounded_int(body, "limit", default=50, minimum=1, maximum=500)
    offset = bounded_int(body, "offset", default=0, minimum=0, maximum=2**31 - 1)
    matches = [p for p in request.app[STORE].products(org) if product_filter.matches(p)]
    page = matches[offset : offset + limit]
    return web.json_response({"data": [p.to_json() for p in page], "total": len(matches)})


async def _read_capped(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"The uploaded file exceeds {limit} bytes.")
    return bytes(data)


async def _read_upload(request: web.Request, field: str, limit: int) -> bytes:
    """Stream the multipart body to the part named ``field``; read at most ``limit`` bytes."""
    if request.content_type != "multipart/form-data":
        raise InvalidMultipart("Content-Type must be multipart/form-data.")
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == field:
                return await _read_capped(part, limit)
    except (ValueError, RuntimeError, HttpProcessingError) as exc:
        raise InvalidMultipart() from exc
    raise ValidationError(field, "a file part of this name is required.")


async def import_products(request: web.Request) -> web.Response:
    """``POST /products/import``: add each good CSV record, report each bad one by line."""
    org = org_id(request)
    data = await _read_upload(request, UPLOAD_FIELD, MAX_IMPORT_BYTES)
    store = request.app[STORE]
    imported = error_count = 0
    listed: list[RowError] = []
    for row in read_product_csv(data):
        if isinstance(row, ProductRow):
            if store.add_product(org, row.name, row.price, row.sku) is not None:
                imported += 1
                continue
            row = RowError(row.line, "sku already exists.")
        error_count += 1
        if len(listed) < MAX_LISTED_ERRORS:
            listed.append(row)
    return web.json_response(
        {
            "imported": imported,
            "errors": [e.to_json() for e in listed],
            "error_count": error_count,
        }
    )


def add_product_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/products", list_products)
    router.add_post("/products/query", query_products)
    router.add_post("/products/import", import_products)
