"""The request-head scanner: its compiled and pure-Python builds give the same answer
to every head, and nothing it accepts is read differently by llhttp (the parser of
many upstreams: a head two parsers read differently is how requests are smuggled)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.http import heads as imported
from gateway.pipeline.paths import normalize

SOURCE = Path(__file__).parents[1] / "gateway" / "http" / "heads.py"


def load(name: str, loader: importlib.abc.Loader, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


PURE = load("heads_pure", importlib.machinery.SourceFileLoader("heads_pure", str(SOURCE)), SOURCE)
BUILT = [
    path
    for suffix in importlib.machinery.EXTENSION_SUFFIXES
    for path in SOURCE.parent.glob(f"heads{suffix}")
]
# The build in use, or (with GATEWAY_PURE_PYTHON=1) the extension beside the source.
COMPILED: ModuleType | None = imported if imported.COMPILED else None
if COMPILED is None and BUILT:
    extension = importlib.machinery.ExtensionFileLoader("gateway.http.heads", str(BUILT[0]))
    COMPILED = load("gateway.http.heads", extension, BUILT[0])
SKIP = frozenset({b"host", b"x-api-key", b"authorization", b"x-org-id", b"connection", b"te"})

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "G ET", "get"]
NAMES = [
    "Host", "Content-Length", "content-length", "Transfer-Encoding", "Connection", "Expect",
    "Upgrade", "X-API-Key", "Authorization", "X_Org_Id", "Cookie", "User-Agent", "Accept",
    "X-Custom", "Bad Name", "Bad:Name", " Folded", "\tFolded", "", "Über", "TE",
]  # fmt: skip
VALUES = [
    "", "0", "12", "00012", "-1", "1 2", "chunked", "Chunked ", "gzip, chunked", "close",
    "keep-alive", "Upgrade", "upgrade, X-Custom", "websocket", "100-continue", " padded\t",
    "a\x00b", "a\rb", "a\x7fb", "é", "gw_session=1; other=2", "x" * 40,
]  # fmt: skip
TARGETS = ["/", "/v1/x?a=1", "*", "http://h/x", "example.com:443", "/a b", "/é", "", "/%00"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/1", "http/1.1", ""]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Heads near the grammar's edges: mostly well-formed lines, with odd pieces mixed in."""
    line = " ".join(
        p
        for p in (
            draw(st.sampled_from(METHODS) | st.text(max_size=6)),
            draw(st.sampled_from(TARGETS) | st.text(max_size=12)),
            draw(st.sampled_from(VERSIONS)),
        )
        if p or draw(st.booleans())
    )
    fields = draw(
        st.lists(
            st.tuples(
                st.sampled_from(NAMES) | st.text(max_size=8),
                st.sampled_from(VALUES) | st.text(max_size=12),
                st.sampled_from([": ", ":", " : ", ":\t"]),
            ),
            max_size=8,
        )
    )
    text = line + "\r\n" + "".join(f"{n}{sep}{v}\r\n" for n, v, sep in fields) + "\r\n"
    return text.encode("utf-8", "surrogatepass")


def outcome(module: ModuleType, raw: bytes) -> tuple[Any, ...]:
    try:
        head = module.scan_request(raw)
    except GatewayError as exc:
        return ("refused", type(exc).__name__)
    fields = head.fields
    skip = module.Skip(SKIP)
    return (
        head.method, head.target, head.version, head.keep_alive, head.length, head.chunked,
        head.expect, head.upgrade, head.has_body, fields.items(), fields.listed, fields.count,
        fields.get("content-length"), fields.getall("X-Custom"), "cookie" in fields,
        bytes(fields.forwarded(skip, b"gw_session")),
    )  # fmt: skip


# Derandomized: the same examples on every run, so a red run is a finding, not luck.
PROPERTY = settings(
    max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.skipif(COMPILED is None, reason="heads is not compiled (no C compiler at install)")
@PROPERTY
@given(heads() | st.binary(max_size=80).map(lambda b: b + b"\r\n\r\n"))
def test_compiled_and_pure_scanners_agree(raw: bytes) -> None:
    assert COMPILED is not None and COMPILED.COMPILED and not PURE.COMPILED
    assert outcome(COMPILED, raw) == outcome(PURE, raw)


class Llhttp:
    on_message_begin = on_body = on_message_complete = on_chunk_header = None
    on_chunk_complete = on_status = None

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


@PROPERTY
@given(heads())
def test_what_the_scanner_accepts_llhttp_reads_the_same(raw: bytes) -> None:
    try:
        head = PURE.scan_request(raw)
        normalize(head.target)  # the engine's next step: a target it refuses goes no further
    except GatewayError:
        return
    reader = Llhttp()
    parser = httptools.HttpRequestParser(reader)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        if "method" in str(exc).lower():
            return  # llhttp knows a fixed list of methods; the scanner takes any token
        raise AssertionError(f"llhttp refuses {raw!r}, which the scanner accepted: {exc}") from None
    assert reader.complete
    assert parser.get_method().decode() == head.method
    assert reader.url.decode() == head.target
    # The same fields; llhttp leaves trailing whitespace on a value, which is not part of
    # it (RFC 9110 §5.5) and which the scanner drops.
    assert [(n, v.rstrip(b" \t")) for n, v in reader.fields] == [
        (n.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for n, v in head.fields.items()
    ]


@pytest.mark.parametrize(
    "raw, refused",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "MalformedRequest"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         "MalformedRequest"),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "MalformedRequest"),
        (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", "MalformedRequest"),
        (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", "MalformedRequest"),
        (b"GET / HTTP/1.1\r\nA: b\x00\r\n\r\n", "MalformedRequest"),
        (b"GET /\r\n\r\n", "VersionNotSupported"),
        (b"GET / HTTP/2.0\r\n\r\n", "VersionNotSupported"),
        (b"GET  / HTTP/1.1\r\n\r\n", "MalformedRequest"),
    ],
)  # fmt: skip
def test_the_scanner_refuses_what_a_proxy_must_not_pass_on(raw: bytes, refused: str | None) -> None:
    for module in filter(None, (PURE, COMPILED)):
        assert outcome(module, raw)[0:2] == (("refused", refused) if refused else ("GET", "/"))


def test_fields_are_read_in_place_and_forwarded_without_credentials() -> None:
    raw = (
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nX-API-Key:  k1 \r\nConnection: keep-alive, X-Foo\r\n"
        b"X-Foo: 1\r\nX_Org_Id: forged\r\nCookie: a=1; gw_session=s; b=2\r\nAccept: */*\r\n\r\n"
    )
    for module in filter(None, (PURE, COMPILED)):
        head = module.scan_request(raw)
        assert head.fields.get("x-api-key") == "k1"
        assert head.fields.listed == frozenset({b"x-foo"})
        forwarded = bytes(head.fields.forwarded(module.Skip(SKIP), b"gw_session"))
        assert forwarded == b"Cookie: a=1; b=2\r\nAccept: */*\r\n"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", "OK"),
        (b"HTTP/1.1 200 \r\n\r\n", ""),
        (b"HTTP/1.1 200\r\n\r\n", ""),
        (b"HTTP/1.0 404 Not Found Here\r\n\r\n", "Not Found Here"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nA: b\x00\r\n\r\n", None),
        (b"ICY 200 OK\r\n\r\n", None),
    ],
)
def test_upstream_answer_heads_are_held_to_the_same_rules(raw: bytes, reason: str | None) -> None:
    for module in filter(None, (PURE, COMPILED)):
        if reason is None:
            with pytest.raises(GatewayError):
                module.scan_response(raw)
        else:
            assert module.scan_response(raw)[0] == reason


def test_an_answer_is_relayed_without_hop_by_hop_fields_or_the_session_cookie() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Set-Cookie: gw_session=forged; Path=/\r\nSet-Cookie: theirs=1\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    )
    for module in filter(None, (PURE, COMPILED)):
        _, fields = module.scan_response(raw)
        skip = module.Skip(frozenset(n.encode() for n in (*module.HOP_BY_HOP, "server")))
        assert bytes(fields.forwarded(skip, b"gw_session", True)) == (
            b"Set-Cookie: theirs=1\r\nContent-Type: text/plain\r\n"
        )


def test_a_long_stripped_name_is_stripped_too() -> None:
    # The table that lets most fields pass unlooked-at covers names under 64 bytes; a
    # longer configured name (an identity-assertion header, say) is still found.
    name = b"x-" + b"a" * 70
    raw = b"GET / HTTP/1.1\r\n" + name.upper() + b": forged\r\nAccept: */*\r\n\r\n"
    for module in filter(None, (PURE, COMPILED)):
        fields = module.scan_request(raw).fields
        assert bytes(fields.forwarded(module.Skip(frozenset({name})), b"")) == b"Accept: */*\r\n"
