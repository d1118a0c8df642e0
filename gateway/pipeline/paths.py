"""Path normalization: the path we match is the path we forward.

A gateway that checks one path and forwards another is an open door
(``/public/../admin``, ``/public/%2e%2e/admin``, ``/public%2Fadmin``). We
normalize once and forward exactly what was matched:

* ``//`` runs collapse to one ``/``;
* literal ``.`` and ``..`` segments are resolved as RFC 3986 §5.2.4 does;
  a ``..`` that would climb above the root is refused;
* anything that cannot be normalized without guessing how the upstream decodes
  it is refused with 400: percent-encoded ``/``, ``\\``, NUL or control bytes,
  encoded dot segments (``%2e``, ``.%2E``), malformed escapes, non-UTF-8 bytes,
  and characters outside RFC 3986 ``pchar``;
* so is a segment that ends in ``.`` or in (encoded) whitespace, which IIS and
  Windows servers trim (``/admin./x`` is their ``/admin/x``);
* a segment with ``;parameters`` (which Tomcat and Spring drop before routing) is
  noted, and refused unless its route says ``allow_path_params: true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from gateway.errors import BadRequest

# RFC 3986 pchar plus "/" and "%" (escapes are checked separately).
PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")
ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
FORBIDDEN_DECODED = re.compile(r"[/\\\x00-\x1f\x7f]")


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class NormalPath:
    segments: tuple[str, ...]  # decoded, for matching
    raw_segments: tuple[str, ...]  # as sent (escapes upper-cased), for forwarding
    trailing_slash: bool
    query: str
    params: bool = False  # a segment carries ";parameters"

    def forward_path(self, strip: int = 0, base: str = "") -> str:
        """The path to send upstream, minus ``strip`` leading segments, under ``base``."""
        kept = self.raw_segments[strip:]
        path = "/" + "/".join(kept)
        if self.trailing_slash and kept:
            path += "/"
        return base.rstrip("/") + path if base else path

    @property
    def display(self) -> str:
        return self.forward_path()


def refuse_params(path: NormalPath, allowed: bool) -> None:
    """400 for ``;parameters`` in a path unless the route allows them: servers that drop
    them would route the request elsewhere than the gateway matched it."""
    if path.params and not allowed:
        raise bad_path("a segment has ';' parameters, which this route does not allow")


def bad_path(detail: str) -> BadRequest:
    return BadRequest(f"The request path cannot be normalized: {detail}.")


def normalize(raw_target: str) -> NormalPath:
    """Split a raw request target into a normalized path and its query string."""
    path, _, query = raw_target.partition("?")
    if path.startswith(("http://", "https://")):
        # RFC 9112 §3.2.2: a server accepts the absolute-form too; the authority is ours.
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    if not path.startswith("/"):
        raise bad_path("it must be an absolute path")
    if not PATH_CHARS.match(path):
        raise bad_path("it contains characters that must be percent-encoded")
    trailing = len(path) > 1 and path.endswith("/")
    parts = [p for p in path.split("/") if p]
    if "%" not in path and "." not in path:
        # Fast path: nothing to decode and no dot segments.
        return NormalPath(tuple(parts), tuple(parts), trailing, query, ";" in path)

    segments: list[str] = []
    raw_segments: list[str] = []
    for part in parts:
        if part == ".":
            continue
        if part == "..":
            if not segments:
                raise bad_path("'..' climbs above the root")
            segments.pop()
            raw_segments.pop()
            continue
        decoded = decode_segment(part)
        if decoded in (".", ".."):
            raise bad_path("percent-encoded dot segments are not allowed")
        if decoded.split(";", 1)[0] in (".", ".."):
            # Java servers drop ";params" and would then resolve "..;" as "..".
            raise bad_path("dot segments with parameters are not allowed")
        if decoded.endswith(".") or decoded[-1].isspace():
            raise bad_path("a segment may not end in '.' or whitespace")
        segments.append(decoded)
        raw_segments.append(ESCAPE.sub(lambda m: "%" + m.group(1).upper(), part))
    params = any(";" in segment for segment in segments)
    return NormalPath(
        tuple(segments), tuple(raw_segments), trailing and bool(segments), query, params
    )


def decode_segment(part: str) -> str:
    if "%" not in part:
        return part
    if BAD_ESCAPE.search(part):
        raise bad_path("it has a malformed percent-escape")
    try:
        decoded = unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_path("a percent-escape is not UTF-8") from None
    if FORBIDDEN_DECODED.search(decoded):
        raise bad_path("percent-encoded '/', '\\' or control characters are not allowed")
    return decoded
