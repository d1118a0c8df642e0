"""Header rewriting between client and upstream.

Towards the upstream, in this order (``Fields.forwarded`` in ``gateway.http.heads``
copies the lines kept, as the client sent them):
1. drop hop-by-hop headers (RFC 9110 §7.6.1), including every name the client
   listed in ``Connection``;
2. drop every header whose name, case-folded and with ``_`` read as ``-``,
   is one the gateway injects or a credential (WSGI servers turn ``X_Org_Id``
   into ``HTTP_X_ORG_ID``, the same variable as ``X-Org-Id``);
3. add the injected headers. Because they are added after step 1, naming them
   in ``Connection`` cannot remove them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from gateway.http.framing import field_lines

INJECTED = (
    "X-Org-Id",
    "X-Scopes",
    "X-Auth-Method",
    "X-Credential-Id",
    "X-Environment",
    "X-Client-Id",
    "X-User-Id",
    "X-Request-Id",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
)
CREDENTIALS = ("Authorization", "X-API-Key", "Access-Token")
# Also dropped: other spellings of the client's address and of the original request
# that a backend or its framework might believe (the gateway's X-Forwarded-* are the
# only ones an upstream sees), and headers that would make the upstream execute
# another method or path than the one the gateway judged.
SPOOFABLE = (
    "Host", "Forwarded", "X-Real-IP", "True-Client-IP", "X-Client-IP", "CF-Connecting-IP",
    "X-Cluster-Client-IP", "Fastly-Client-IP", "X-Forwarded-Server", "X-Forwarded-Scheme",
    "X-Forwarded-Ssl", "X-Forwarded-Port", "X-Forwarded-Prefix",
)  # fmt: skip
# The gateway's span is the upstream's parent (``gateway.tracing``); tracestate passes.
TRACE = ("traceparent",)
OVERRIDES = (
    "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL",
    "X-Rewrite-URL", "X-Original-Method",
)  # fmt: skip
STRIPPED = frozenset(n.lower() for n in (*INJECTED, *CREDENTIALS, *SPOOFABLE, *OVERRIDES, *TRACE))
TRUST_CACHED = 4096  # addresses whose trust is remembered (``ForwardedFor.is_trusted``)
LONGEST_ADDRESS = 64  # characters: longer is no IP address (IPv6 with a zone is under 64)


class FieldView(Protocol):
    """A request's fields as the pipeline reads them: the engine's (``Fields``, read in
    place from the head) or aiohttp's for the gateway's own endpoints."""

    def get(self, name: str, /) -> str | None: ...

    def getall(self, name: str, default: tuple[()], /) -> list[str] | tuple[()]: ...

    def __contains__(self, name: object, /) -> bool: ...


@dataclass(slots=True)
class Injected:
    """The fields the gateway adds to a request it forwards: the caller's identity, as
    lines made once per principal (``Principal.identity_lines``), then this request's
    own (X-Request-Id, the signed assertion, X-Forwarded-*, traceparent)."""

    prepared: bytes
    fields: list[tuple[str, str]]

    def lines(self) -> bytes:
        return self.prepared + field_lines(self.fields)


class ForwardedFor:
    """Decides the client address and the X-Forwarded-* values.

    X-Forwarded-* from the client are believed only when the peer is one of
    ``proxy.trusted_proxies``; otherwise the peer itself is the client. The
    forwarded host is ``public_url``'s when one is configured, never what the client
    typed in ``Host``.
    """

    def __init__(self, trusted: Iterable[str], public_host: str | None = None) -> None:
        self.configure(trusted, public_host)

    def configure(self, trusted: Iterable[str], public_host: str | None) -> None:
        """At start, and on a reload."""
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in trusted)
        self.public_host = public_host
        # Each address's trust, parsed once; bounded, as X-Forwarded-For is the client's.
        self._judge = lru_cache(maxsize=TRUST_CACHED)(self._trusts)

    def is_trusted(self, address: str | None) -> bool:
        if not self.trusted or not address or len(address) > LONGEST_ADDRESS:
            return False
        return self._judge(address)

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def resolve(
        self, peer: str, scheme: str, headers: FieldView
    ) -> tuple[str, list[tuple[str, str]]]:
        host = self.public_host or headers.get("Host") or ""
        if not self.is_trusted(peer):  # the peer is the client
            return peer, [
                ("X-Forwarded-For", peer),
                ("X-Forwarded-Proto", scheme),
                ("X-Forwarded-Host", host),
            ]
        sent = ",".join(headers.getall("X-Forwarded-For", ()))
        earlier = [a.strip() for a in sent.split(",") if a.strip()]
        chain = [*earlier, peer]
        proto = headers.get("X-Forwarded-Proto") or scheme
        host = self.public_host or headers.get("X-Forwarded-Host") or host
        client = next((a for a in reversed(chain) if not self.is_trusted(a)), chain[0])
        return client, [
            ("X-Forwarded-For", ", ".join(chain)),
            ("X-Forwarded-Proto", proto),
            ("X-Forwarded-Host", host),
        ]
