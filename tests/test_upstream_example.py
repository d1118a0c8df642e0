"""The example backend, exercised through its real app over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse, FormData, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from upstream_example import create_app
from upstream_example.diagnostics import PATTERN
from upstream_example.products import MAX_IMPORT_BYTES
from upstream_example.validation import parse_float_param

Client = TestClient[web.Request, web.Application]

ORG_A = {"X-Org-Id": "org-a"}
ORG_B = {"X-Org-Id": "org-b"}
CONTACT_BASES = ["/contacts", "/functions/v1/api-contacts"]


async def assert_error(response: ClientResponse, status: int, code: str) -> None:
    """The response has ``status`` and the JSON error body with ``code``."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


def csv_form(content: bytes, field: str = "file") -> FormData:
    form = FormData()
    # A file object, as aiohttp warns about sending large raw bytes.
    form.add_field(field, io.BytesIO(content), filename="products.csv", content_type="text/csv")
    return form


# Status and errors of the app as a whole.


async def test_status_is_public(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.get("/status")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "service": "upstream_example"}


async def test_unknown_route_and_method_are_json(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    await assert_error(await client.get("/nope"), 404, "not_found")
    response = await client.put("/status")
    await assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("code", [200, 201, 302, 401, 403, 418, 502, 599])
async def test_status_code_is_passed_through(aiohttp_client: AiohttpClient, code: int) -> None:
    client = await aiohttp_client(create_app())
    response = await client.get(f"/status/{code}", allow_redirects=False)
    assert response.status == code
    assert await response.json() == {"status": code}


async def test_bodiless_status_codes(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    for code in (204, 304):
        response = await client.get(f"/status/{code}")
        assert response.status == code
        assert await response.read() == b""


@pytest.mark.parametrize(
    "code", ["100", "199", "600", "abc", "-200", "\uff12\uff10\uff10", "9" * 30]
)
async def test_status_code_out_of_range(aiohttp_client: AiohttpClient, code: str) -> None:
    client = await aiohttp_client(create_app())
    await assert_error(await client.get(f"/status/{code}"), 400, "invalid_parameter")


# Contacts.


@pytest.mark.parametrize("base", CONTACT_BASES)
async def test_contacts_need_an_org(aiohttp_client: AiohttpClient, base: str) -> None:
    client = await aiohttp_client(create_app())
    response = await client.get(base)
    assert response.status == 400
    assert await response.json() == {
        "error": "missing_org",
        "message": "X-Org-Id header is required.",
    }
    await assert_error(await client.get(base, headers={"X-Org-Id": "  "}), 400, "missing_org")
    await assert_error(await client.post(base, json={"name": "x"}), 400, "missing_org")
    await assert_error(await client.delete(f"{base}/some-id"), 400, "missing_org")


async def test_duplicate_org_header_is_refused(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    headers = CIMultiDict([("X-Org-Id", "org-a"), ("X-Org-Id", "org-b")])
    await assert_error(await client.get("/contacts", headers=headers), 400, "ambiguous_org")


async def test_contact_lifecycle_across_both_mounts(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post(
        "/contacts", json={"name": "Ada", "email": "ada@example.com"}, headers=ORG_A
    )
    assert response.status == 201
    created = await response.json()
    assert set(created) == {"id", "name", "email", "phone", "org_id", "created_at"}
    assert created["org_id"] == "org-a"
    assert created["phone"] is None

    item = f"/functions/v1/api-contacts/{created['id']}"
    response = await client.get(item, headers=ORG_A)
    assert await response.json() == created

    response = await client.patch(item, json={"phone": "+1 555", "email": None}, headers=ORG_A)
    assert response.status == 200
    patched = await response.json()
    assert patched == {**created, "phone": "+1 555", "email": None}

    response = await client.get("/contacts", headers=ORG_A)
    assert await response.json() == {"data": [patched]}

    response = await client.delete(f"/contacts/{created['id']}", headers=ORG_A)
    assert response.status == 204
    await assert_error(await client.get(item, headers=ORG_A), 404, "not_found")
    await assert_error(await client.delete(item, headers=ORG_A), 404, "not_found")


async def test_contacts_are_isolated_per_org(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/contacts", json={"name": "Only A"}, headers=ORG_A)
    item = f"/contacts/{(await response.json())['id']}"

    response = await client.get("/contacts", headers=ORG_B)
    assert await response.json() == {"data": []}
    await assert_error(await client.get(item, headers=ORG_B), 404, "not_found")
    response = await client.patch(item, json={"name": "Stolen"}, headers=ORG_B)
    await assert_error(response, 404, "not_found")
    await assert_error(await client.delete(item, headers=ORG_B), 404, "not_found")

    response = await client.get(item, headers=ORG_A)
    assert (await response.json())["name"] == "Only A"


async def test_contacts_filter_and_head(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    for name, email in [("Ada", "ada@one.test"), ("Grace", "grace@two.test"), ("Linus", None)]:
        await client.post("/contacts", json={"name": name, "email": email}, headers=ORG_A)

    response = await client.get("/contacts", params={"q": "TWO"}, headers=ORG_A)
    assert [c["name"] for c in (await response.json())["data"]] == ["Grace"]
    response = await client.get("/contacts", params={"q": "a"}, headers=ORG_A)
    assert [c["name"] for c in (await response.json())["data"]] == ["Ada", "Grace"]

    response = await client.head("/contacts", headers=ORG_A)
    assert response.status == 200
    assert await response.read() == b""


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"name": "\xff"}', 400, "invalid_json"),
        (b'{"name": NaN}', 400, "invalid_json"),
        (b"[" * 100_000, 400, "invalid_json"),
        (b"[]", 422, "validation_error"),
        (b"{}", 422, "validation_error"),
        (b'{"name": ""}', 422, "validation_error"),
        (b'{"name": "   "}', 422, "validation_error"),
        (b'{"name": 5}', 422, "validation_error"),
        (b'{"name": "a", "email": 5}', 422, "validation_error"),
        (b'{"name": "a", "phone": ["x"]}', 422, "validation_error"),
        (b'{"name": "a", "org_id": "org-b"}', 422, "validation_error"),
    ],
)
async def test_contact_validation(
    aiohttp_client: AiohttpClient, body: bytes, status: int, code: str
) -> None:
    client = await aiohttp_client(create_app())
    headers = {**ORG_A, "Content-Type": "application/json"}
    await assert_error(await client.post("/contacts", data=body, headers=headers), status, code)


async def test_contact_patch_validation(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/contacts", json={"name": "Ada"}, headers=ORG_A)
    item = f"/contacts/{(await response.json())['id']}"
    for body in ({"name": None}, {"name": ""}, {"email": 1}, {"id": "x"}):
        response = await client.patch(item, json=body, headers=ORG_A)
        await assert_error(response, 422, "validation_error")
    response = await client.get(item, headers=ORG_A)
    assert (await response.json())["name"] == "Ada"


async def test_oversized_json_body_is_413(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    body = json.dumps({"name": "x" * (2 * 1024 * 1024)}).encode()
    response = await client.post("/contacts", data=io.BytesIO(body), headers=ORG_A)
    await assert_error(response, 413, "payload_too_large")


# Products.

CATALOGUE = (
    b"name,price,sku\r\n"
    b"Widget,9.99,W-1\r\n"  # line 2
    b"Gadget,abc,G-1\r\n"  # line 3: bad price
    b",1.00,X-1\r\n"  # line 4: no name
    b"Gizmo,5,W-1\r\n"  # line 5: duplicate sku
    b"Too,1,many,fields\r\n"  # line 6
    b"\r\n"  # line 7: blank, skipped
    b'"Multi\r\nline",2.5,M-1\r\n'  # lines 8-9
    b"Last,3,L-1\r\n"  # line 10
)


async def test_csv_import_reports_bad_lines(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/products/import", data=csv_form(CATALOGUE), headers=ORG_A)
    assert response.status == 200
    result = await response.json()
    assert result["imported"] == 3
    assert [e["line"] for e in result["errors"]] == [3, 4, 5, 6]
    assert result["error_count"] == 4
    assert all(isinstance(e["message"], str) for e in result["errors"])

    response = await client.get("/products", headers=ORG_A)
    products = (await response.json())["data"]
    assert [(p["name"], p["price"], p["sku"]) for p in products] == [
        ("Widget", 9.99, "W-1"),
        ("Multi\r\nline", 2.5, "M-1"),
        ("Last", 3.0, "L-1"),
    ]
    assert all(set(p) == {"id", "name", "price", "sku"} for p in products)

    response = await client.get("/products", headers=ORG_B)
    assert await response.json() == {"data": []}


async def test_product_query_filters_and_pages(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    await client.post("/products/import", data=csv_form(CATALOGUE), headers=ORG_A)

    async def query(body: object) -> dict[str, object]:
        response = await client.post("/products/query", json=body, headers=ORG_A)
        assert response.status == 200
        result: dict[str, object] = await response.json()
        return result

    def names(result: dict[str, object]) -> list[str]:
        data = result["data"]
        assert isinstance(data, list)
        return [p["name"] for p in data]

    everything = await query({})
    assert everything["total"] == 3
    cheap_or_mid = await query({"filter": {"min_price": 2.5, "max_price": 5}})
    assert names(cheap_or_mid) == ["Multi\r\nline", "Last"]
    page = await query({"filter": {"min_price": 2.5}, "limit": 1, "offset": 1})
    assert (names(page), page["total"]) == (["Multi\r\nline"], 3)
    by_name = await query({"filter": {"name_contains": "WID"}})
    assert names(by_name) == ["Widget"]
    past_end = await query({"offset": 10})
    assert (names(past_end), past_end["total"]) == ([], 3)

    response = await client.post("/products/query", json={}, headers=ORG_B)
    assert await response.json() == {"data": [], "total": 0}


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "5"},
        {"limit": 1.5},
        {"limit": True},
        {"offset": -1},
        {"filter": "cheap"},
        {"filter": {"min_price": "1"}},
        {"filter": {"max_price": False}},
        {"filter": {"name_contains": 3}},
        {"filter": {"colour": "red"}},
        {"sort": "price"},
        [],
    ],
)
async def test_product_query_validation(aiohttp_client: AiohttpClient, body: object) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/products/query", json=body, headers=ORG_A)
    await assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "raw", [b'{"filter": {"min_price": 1e400}}', b'{"limit": 1' + b"0" * 400 + b"}"]
)
async def test_product_query_rejects_out_of_range_numbers(
    aiohttp_client: AiohttpClient, raw: bytes
) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/products/query", data=raw, headers=ORG_A)
    await assert_error(response, 422, "validation_error")


async def test_product_query_malformed_json(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.post("/products/query", data=b"{nope", headers=ORG_A)
    await assert_error(response, 400, "invalid_json")
    await assert_error(await client.post("/products/query", json={}), 400, "missing_org")


async def test_import_rejects_bad_uploads(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())

    async def post(data: object, headers: dict[str, str] | None = None) -> ClientResponse:
        return await client.post(
            "/products/import", data=data, headers={**ORG_A, **(headers or {})}
        )

    await assert_error(await post(b"name,price,sku\n"), 400, "invalid_multipart")
    garbage = {"Content-Type": "multipart/form-data; boundary=xyz"}
    await assert_error(await post(b"not multipart at all", garbage), 400, "invalid_multipart")
    no_boundary = {"Content-Type": "multipart/form-data"}
    await assert_error(await post(b"--x\r\n\r\n", no_boundary), 400, "invalid_multipart")
    await assert_error(await post(csv_form(CATALOGUE, field="upload")), 422, "validation_error")
    await assert_error(await post(csv_form(b"name,price,sku\n\xff,1,A\n")), 422, "invalid_csv")
    await assert_error(await post(csv_form(b"")), 422, "invalid_csv")
    await assert_error(await post(csv_form(b"sku,name,price\nA,b,1\n")), 422, "invalid_csv")


async def test_import_caps_the_file_size(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    header = b"name,price,sku\n"
    too_big = header + b"x" * (MAX_IMPORT_BYTES + 1 - len(header))
    response = await client.post("/products/import", data=csv_form(too_big), headers=ORG_A)
    await assert_error(response, 413, "payload_too_large")

    # Just under the cap is accepted (and one long, unreadable line is reported).
    at_cap = header + b"x" * (MAX_IMPORT_BYTES - len(header))
    response = await client.post("/products/import", data=csv_form(at_cap), headers=ORG_A)
    assert response.status == 200
    result = await response.json()
    assert (result["imported"], result["error_count"]) == (0, 1)


# Echo.


async def raw_request(client: Client, request: bytes) -> tuple[bytes, bytes]:
    """Send exact bytes (the aiohttp client merges duplicate headers); return head and body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await reader.read()  # the request says Connection: close
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


async def test_echo_reports_headers_in_order_with_duplicates(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    body = b"hello world " * 10_000
    request = (
        b"PUT /echo/a%2Fb/c?x=1&x=2&y=%20 HTTP/1.1\r\n"
        b"Host: upstream\r\n"
        b"X-Dup: one\r\n"
        b"X-Other: mid\r\n"
        b"x-dup: two\r\n"
        b"X-Latin: caf\xe9\r\n"
        b"Connection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    head, raw_body = await raw_request(client, request)
    assert head.startswith(b"HTTP/1.1 200 ")
    echo = json.loads(raw_body)
    assert echo["method"] == "PUT"
    assert echo["path"] == "/echo/a%2Fb/c"
    assert echo["query"] == "x=1&x=2&y=%20"
    assert echo["headers"] == [
        ["Host", "upstream"],
        ["X-Dup", "one"],
        ["X-Other", "mid"],
        ["x-dup", "two"],
        ["X-Latin", "caf\u00e9"],
        ["Connection", "close"],
        ["Content-Length", str(len(body))],
    ]
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_echo_streams_a_chunked_body(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    piece = bytes(range(256)) * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield piece

    response = await client.post("/echo", data=chunks())
    echo = await response.json()
    assert ["Transfer-Encoding", "chunked"] in echo["headers"]
    assert echo["path"] == "/echo"
    assert echo["query"] == ""
    assert echo["body_length"] == 20 * len(piece)
    assert echo["body_sha256"] == hashlib.sha256(piece * 20).hexdigest()


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS", "PATCH", "PROPFIND"])
async def test_echo_answers_any_method(aiohttp_client: AiohttpClient, method: str) -> None:
    client = await aiohttp_client(create_app())
    response = await client.request(method, "/echo/")
    echo = await response.json()
    assert (echo["method"], echo["path"], echo["body_length"]) == (method, "/echo/", 0)
    assert echo["body_sha256"] == hashlib.sha256(b"").hexdigest()


# Streaming and timing.


def pattern(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


async def test_bytes_streams_exact_length(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    n = 3 * 65536 + 7
    response = await client.get(f"/bytes/{n}")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(n)
    assert await response.read() == pattern(n)

    response = await client.get("/bytes/0")
    assert (response.headers["Content-Length"], await response.read()) == ("0", b"")


async def test_bytes_chunked(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.get("/bytes/100001", params={"chunked": "1"})
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert await response.read() == pattern(100_001)


async def test_bytes_head_sends_only_headers(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    response = await client.head("/bytes/100000000000")
    assert response.status == 200
    assert response.headers["Content-Length"] == "100000000000"
    assert await response.read() == b""


@pytest.mark.parametrize(
    "path", ["/bytes/-1", "/bytes/x", "/bytes/100000000001", "/bytes/5?chunked=2"]
)
async def test_bytes_rejects_bad_parameters(aiohttp_client: AiohttpClient, path: str) -> None:
    client = await aiohttp_client(create_app())
    await assert_error(await client.get(path), 400, "invalid_parameter")


async def test_slow_sleeps_for_any_method(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    started = time.monotonic()
    response = await client.post("/slow", params={"delay": "0.2"}, data=b"ignored")
    assert await response.json() == {"slept": 0.2}
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("delay", ["soon", "-1", "nan", "inf", ""])
async def test_slow_rejects_bad_delay(aiohttp_client: AiohttpClient, delay: str) -> None:
    client = await aiohttp_client(create_app())
    for path in ("/slow", "/slow-body"):
        await assert_error(
            await client.get(path, params={"delay": delay}), 400, "invalid_parameter"
        )


def test_delay_is_capped() -> None:
    assert parse_float_param("delay", "1000", minimum=0.0, cap=120.0) == 120.0


async def test_slow_body_sends_headers_first(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app())
    started = time.monotonic()
    response = await client.get("/slow-body", params={"delay": "0.5"})
    headers_after = time.monotonic() - started
    body = await response.json()
    body_after = time.monotonic() - started
    assert response.status == 200
    assert headers_after < 0.4
    assert body_after >= 0.5
    assert body == {"slept": 0.5}
