"""Heads scanned in place (RFC 9112 §2-5): a client's request and an upstream's answer.

Start line and fields are checked in one pass over the received bytes; the fields
the pipeline asks for are found by name in those bytes, and those passed on are
copied from them. No Python object is made per field: a field is four offsets in
``Fields.spans``. Cython's pure-Python mode: ``setup.py`` compiles this source,
which also runs as it is (``docs/layout.md``, "The compiled hot path"). Ours
rather than llhttp's, which hands each field to a Python callback as two new
``bytes``: the objects this module exists to avoid.
"""

from __future__ import annotations

import cython

from gateway.errors import HeadTooLarge, MalformedRequest, VersionNotSupported

COMPILED: bool = cython.compiled

MAX_HEAD = 32 * 1024  # bytes of request line and fields (aiohttp allows 16 KiB a field)
MAX_FIELDS = 128  # as aiohttp
MAX_LENGTH_DIGITS = 18  # a Content-Length below 10**18

# Byte classes, one byte per octet (RFC 9110 §5.6.2 tchar, §5.5 field-value).
TOKEN: bytes = cython.declare(
    bytes, bytes(1 if (chr(c).isalnum() and c < 128) or chr(c) in "!#$%&'*+-.^_`|~" else 0
                 for c in range(256)),
)  # fmt: skip
VALUE: bytes = cython.declare(
    bytes, bytes(1 if c in (0x09, 0x20) or 0x21 <= c <= 0x7E or c >= 0x80 else 0
                 for c in range(256)),
)  # fmt: skip
# Lower case, and "_" read as "-": the strip rule's spelling of a name (``Skip``).
LOWER: bytes = cython.declare(bytes, bytes(range(256)).lower())
CANONICAL: bytes = cython.declare(bytes, bytes(range(256)).lower().replace(b"_", b"-"))

# Fields RFC 9110 gives one value, refused twice (as aiohttp refuses them).
SINGLE = frozenset(
    {b"content-length", b"content-location", b"content-range", b"content-type", b"etag",
     b"host", b"max-forwards", b"server", b"user-agent"}
)  # fmt: skip
# Hop-by-hop fields (RFC 9110 §7.6.1): never passed on, either way.
# Expect too: the gateway answers it itself; forwarded, it would stall the upstream call.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)  # fmt: skip
SHAPES = 64 * 256  # the Skip table: names up to 63 bytes, by length and first byte


@cython.cclass
class Fields:
    """A head's fields, read in place: the same questions as a ``CIMultiDict`` of them
    (``get``, ``getall``, ``in``, ``items``), answered from the received bytes."""

    raw = cython.declare(bytes, visibility="readonly")
    spans = cython.declare(bytearray)  # per field: name start, colon, value start, end
    count = cython.declare(cython.Py_ssize_t, visibility="readonly")
    listed = cython.declare(frozenset, visibility="readonly")  # hop-by-hop by Connection

    def __init__(
        self, raw: bytes, spans: bytearray, count: cython.Py_ssize_t, listed: frozenset[bytes]
    ) -> None:
        self.raw, self.spans, self.count, self.listed = raw, spans, count, listed

    @cython.cfunc
    @cython.inline
    def _at(self, field: cython.Py_ssize_t, which: cython.Py_ssize_t) -> cython.Py_ssize_t:
        spans: bytearray = self.spans
        i: cython.Py_ssize_t = field * 8 + which * 2
        return spans[i] | (spans[i + 1] << 8)

    @cython.cfunc
    def _find(self, key: bytes, after: cython.Py_ssize_t) -> cython.Py_ssize_t:
        """The first field past ``after`` named ``key`` (lower case), or -1."""
        raw: bytes = self.raw
        lower: bytes = LOWER
        n: cython.Py_ssize_t = len(key)
        cython.declare(k=cython.Py_ssize_t, j=cython.Py_ssize_t, start=cython.Py_ssize_t)
        for k in range(after + 1, self.count):
            start = self._at(k, 0)
            if self._at(k, 1) - start != n:
                continue
            for j in range(n):
                if lower[raw[start + j]] != key[j]:
                    break
            else:
                return k
        return -1

    @cython.cfunc
    def _value(self, field: cython.Py_ssize_t) -> str:
        return self.raw[self._at(field, 2) : self._at(field, 3)].decode("utf-8", "surrogateescape")

    def get(self, name: str, default: str | None = None) -> str | None:
        field: cython.Py_ssize_t = self._find(key_of(name), -1)
        return default if field < 0 else self._value(field)

    def getall(self, name: str, default: tuple[str, ...] = ()) -> list[str] | tuple[str, ...]:
        key: bytes = key_of(name)
        found: list[str] = []
        field: cython.Py_ssize_t = self._find(key, -1)
        while field >= 0:
            found.append(self._value(field))
            field = self._find(key, field)
        return found or default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(key_of(name), -1) >= 0

    def items(self) -> list[tuple[str, str]]:
        return [(self.raw[self._at(k, 0) : self._at(k, 1)].decode("latin-1"), self._value(k))
                for k in range(self.count)]  # fmt: skip

    def forwarded(self, skip: Skip, cookie: bytes, answer: cython.bint = False) -> bytearray:
        """The field lines passed on, as they were sent: every field but those ``skip``
        names and those the Connection field lists. The gateway's own session cookie
        ``cookie`` is a credential: a request's Cookie field goes without it (a
        dashboard login never reaches an upstream), and an ``answer`` that sets it
        loses that Set-Cookie field. The head is copied once and the lines left out
        are cut from the copy, last first."""
        listed: frozenset[bytes] = self.listed  # names this head's Connection lists
        raw: bytes = self.raw
        shapes: bytearray = skip.shapes
        canonical: bytes = CANONICAL
        size: cython.Py_ssize_t = len(raw)
        out = bytearray(raw)
        del out[size - 2 :]  # the blank line
        cython.declare(k=cython.Py_ssize_t, start=cython.Py_ssize_t, n=cython.Py_ssize_t)
        end: cython.Py_ssize_t = size - 2  # of the field line after the one looked at
        for k in range(self.count - 1, -1, -1):
            start = self._at(k, 0)
            n = self._at(k, 1) - start
            # A name the table cannot rule out is looked at: long ones, and every one when
            # the Connection field lists names of its own.
            if listed or n >= 64 or shapes[n * 256 + canonical[raw[start]]]:
                name = raw[start : start + n].translate(canonical)
                if name in skip.names or name in listed:
                    del out[start:end]
                elif answer:
                    if name == b"set-cookie" and cookie and _named(self._value(k), cookie):
                        del out[start:end]
                elif name == b"cookie" and cookie and cookie in raw[start:end]:
                    kept = without_cookie(self._value(k), cookie.decode("latin-1"))
                    out[start:end] = (
                        raw[start : start + n] + b": " + kept.encode("utf-8", "surrogateescape")
                        + b"\r\n" if kept else b""
                    )  # fmt: skip
            end = start
        del out[:end]  # the request line
        return out


@cython.cclass
class Skip:
    """Names whose fields are not passed on, kept canonical (lower case, "_" read as
    "-"), with a table by length and first byte, so that a field no name could match
    is copied without its name being looked at twice."""

    names = cython.declare(frozenset, visibility="readonly")
    shapes = cython.declare(bytearray)

    def __init__(self, names: frozenset[bytes]) -> None:
        self.names = names = frozenset(name.translate(CANONICAL) for name in names)
        self.shapes = bytearray(SHAPES)
        for name in names | {b"cookie", b"set-cookie"}:  # looked at for the session's
            if 0 < len(name) < 64:
                self.shapes[len(name) * 256 + name[0]] = 1


@cython.cclass
class RequestHead:
    """A request head as the engine serves it; ``fields`` read in place."""

    method = cython.declare(str, visibility="readonly")
    target = cython.declare(str, visibility="readonly")
    version = cython.declare(str, visibility="readonly")  # "1.0" or "1.1"
    fields = cython.declare(Fields, visibility="readonly")
    keep_alive = cython.declare(cython.bint, visibility="readonly")
    length = cython.declare(cython.longlong, visibility="readonly")  # Content-Length, or 0
    chunked = cython.declare(cython.bint, visibility="readonly")  # RFC 9112 §7.1
    expect = cython.declare(object, visibility="readonly")  # the Expect field, as sent
    upgrade = cython.declare(object, visibility="readonly")  # when Connection names it too

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


_KEYS: dict[str, bytes] = {}


def key_of(name: str) -> bytes:
    """A name as compared (lower-case bytes): encoded once each, for up to 1024 names."""
    key = _KEYS.get(name)
    if key is None:
        key = name.lower().encode("latin-1", "replace")
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


def _named(set_cookie: str, cookie: bytes) -> bool:
    return set_cookie.split("=", 1)[0].strip() == cookie.decode("latin-1")


def without_cookie(header: str, name: str) -> str:
    """A Cookie field minus the cookie ``name``."""  # a Set-Cookie's is ``_named``
    parts = (part.strip() for part in header.split(";"))
    return "; ".join(part for part in parts if part and part.split("=", 1)[0].strip() != name)


@cython.cfunc
def _span(spans: bytearray, value: cython.Py_ssize_t) -> cython.void:
    spans.append(value & 0xFF)
    spans.append(value >> 8)


@cython.cfunc
def _request_line(raw: bytes, end: cython.Py_ssize_t) -> tuple[str, str, str]:
    """method SP request-target SP HTTP-version (RFC 9112 §3)."""
    token: bytes = TOKEN
    i: cython.Py_ssize_t = 0
    c: cython.uchar
    # The version first: a line without one (HTTP/0.9's form) or with one this engine
    # does not serve is answered 505 (RFC 9110 §15.6.6).
    named: cython.bint = end >= 9 and raw[end - 9 : end - 3] == b" HTTP/"
    if not named or raw[end - 3 : end - 1] != b"1." or raw[end - 1] not in (0x30, 0x31):
        if named or raw.find(b" HTTP", 0, end) < 0:
            raise VersionNotSupported()
        raise MalformedRequest()
    while i < end and token[raw[i]]:
        i += 1
    if i == 0 or i >= end or raw[i] != 0x20:
        raise MalformedRequest()
    method_end: cython.Py_ssize_t = i
    i += 1
    target_start: cython.Py_ssize_t = i
    while i < end:
        c = raw[i]
        if c <= 0x20 or c >= 0x7F:
            break
        i += 1
    if i == target_start or i != end - 9:
        raise MalformedRequest()  # an empty target, odd spaces, or a byte no URI has
    return (raw[:method_end].decode("ascii"), raw[target_start:i].decode("ascii"),
            "1.1" if raw[end - 1] == 0x31 else "1.0")  # fmt: skip


@cython.boundscheck(False)
@cython.wraparound(False)
def scan_request(raw: bytes) -> RequestHead:
    """The request head ``raw`` (its blank line included), checked: MalformedRequest
    (400) for anything RFC 9112 does not allow or a proxy must not pass on,
    VersionNotSupported (505) for a version other than HTTP/1.0 and 1.1."""
    _check_size(raw)
    line_end: cython.Py_ssize_t = raw.find(b"\r\n")
    method, target, version = _request_line(raw, line_end)
    head = RequestHead()
    head.method, head.target, head.version = method, target, version
    head.keep_alive = version == "1.1"  # RFC 9112 §9.3
    head.length, head.chunked, head.expect, head.upgrade = 0, False, None, None
    head.fields = _fields(raw, line_end + 2, head)
    return head


@cython.boundscheck(False)
@cython.wraparound(False)
def scan_response(raw: bytes) -> tuple[str, Fields]:
    """An upstream's response head ``raw`` (its blank line included), whose framing
    llhttp has read: its reason phrase and fields, held to the same rules as a
    request's (MalformedRequest: the gateway answers 502)."""
    _check_size(raw)
    line_end: cython.Py_ssize_t = raw.find(b"\r\n")
    # HTTP-version SP status-code SP [ reason-phrase ]; llhttp has read the code, and
    # like most clients takes a line without the second SP too (RFC 9112 §4).
    if line_end < 12 or raw[:7] != b"HTTP/1." or (line_end > 12 and raw[12] != 0x20):
        raise MalformedRequest()
    reason = raw[13:line_end].decode("latin-1") if line_end > 13 else ""
    return reason, _fields(raw, line_end + 2, None)


@cython.cfunc
def _check_size(raw: bytes) -> cython.void:
    size: cython.Py_ssize_t = len(raw)
    if size > MAX_HEAD + 4:
        raise HeadTooLarge()
    if size < 4 or raw[size - 4 :] != b"\r\n\r\n":
        raise MalformedRequest()


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _fields(raw: bytes, i: cython.Py_ssize_t, head: RequestHead | None) -> Fields:
    """The field lines from ``i`` to the blank line that ends ``raw``, checked (RFC 9112
    §5): a token, a colon, a value of visible bytes, spaces and tabs. A request's
    framing and connection fields are read into ``head`` as they pass."""
    token: bytes = TOKEN
    value: bytes = VALUE
    lower: bytes = LOWER
    size: cython.Py_ssize_t = len(raw)
    listed: frozenset[bytes] = frozenset()
    spans = bytearray()
    count: cython.Py_ssize_t = 0
    cython.declare(start=cython.Py_ssize_t, colon=cython.Py_ssize_t, first=cython.Py_ssize_t,
                   last=cython.Py_ssize_t, n=cython.Py_ssize_t, c=cython.uchar)  # fmt: skip
    # Connection's options, and whether the request declared a length
    cython.declare(closing=cython.bint, keeping=cython.bint, upgrading=cython.bint,
                   seen_length=cython.bint)  # fmt: skip
    closing = keeping = upgrading = seen_length = False
    seen: set[bytes] | None = None
    upgrade_value: str | None = None
    while i < size - 2:  # each field line; the last two bytes end the head
        start = i
        while token[raw[i]]:
            i += 1
        if i == start or raw[i] != 0x3A:  # no name, obs-fold, or space before ':' (§5.1)
            raise MalformedRequest()
        colon = i
        i += 1
        while raw[i] == 0x20 or raw[i] == 0x09:
            i += 1
        first = i
        while True:
            c = raw[i]
            if not value[c]:
                break
            i += 1
        if c != 0x0D or raw[i + 1] != 0x0A:
            raise MalformedRequest()  # a control byte in the value, or a bare CR
        last = i
        while last > first and (raw[last - 1] == 0x20 or raw[last - 1] == 0x09):
            last -= 1
        i += 2
        count += 1
        if count > MAX_FIELDS:
            raise MalformedRequest()
        _span(spans, start)
        _span(spans, colon)
        _span(spans, first)
        _span(spans, last)
        n = colon - start
        # Only names of the lengths below mean something here.
        if n not in (4, 6, 7, 10, 12, 13, 14, 16, 17) or (head is None and n != 10):
            continue
        name = raw[start:colon].translate(lower)
        if name == b"connection":
            for part in raw[first:last].lower().split(b","):
                option = part.strip(b" \t")
                if option == b"close":
                    closing = True
                elif option == b"keep-alive":
                    keeping = True
                elif option == b"upgrade":
                    upgrading = True
                elif option and option != b"content-length":  # framing is never dropped
                    listed = listed | {option.translate(CANONICAL)}
            continue
        if head is None:
            continue
        if name in SINGLE:
            if seen is None:
                seen = set()
            elif name in seen:
                raise MalformedRequest()
            seen.add(name)
        if name == b"content-length":
            if last - first > MAX_LENGTH_DIGITS or last == first:
                raise MalformedRequest()
            for j in range(first, last):
                if not 0x30 <= raw[j] <= 0x39:
                    raise MalformedRequest()
            head.length = int(raw[first:last])
            seen_length = True
        elif name == b"transfer-encoding":
            # Only chunked is decoded; any other coding would reach the upstream altered.
            if head.chunked or raw[first:last].lower() != b"chunked":
                raise MalformedRequest()
            head.chunked = True
        elif name == b"expect":
            head.expect = raw[first:last].decode("latin-1")
        elif name == b"upgrade":
            upgrade_value = raw[first:last].decode("latin-1")
    if raw[i] != 0x0D or raw[i + 1] != 0x0A or i + 2 != size:
        raise MalformedRequest()
    if head is not None:
        if seen_length and head.chunked:
            raise MalformedRequest()  # both framings: refused (RFC 9112 §6.1)
        if closing:
            head.keep_alive = False
        elif keeping and head.version == "1.0":
            head.keep_alive = True
        # RFC 9110 §7.8: an Upgrade field not named in Connection is ignored.
        head.upgrade = upgrade_value if upgrading else None
    return Fields(raw, spans, count, listed)
