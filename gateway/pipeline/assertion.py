"""Signed identity assertions: with ``identity_assertion.enabled``, every forwarded
request (and every allowed decision) carries a short-lived JWT, signed with the
gateway's token signing keys (published at ``/.well-known/jwks.json``), that says
who the caller is. An upstream that can also be reached another way verifies it
instead of trusting ``X-Org-Id`` and its siblings.

Claims: ``iss`` (public_url), ``aud`` (the upstream's name), ``sub`` (the user,
else the credential), ``org_id``, ``scope``, ``auth_method``, ``credential_id``,
``client_id`` when known, ``iat``, ``exp``, ``jti``. A public route's assertion
has ``auth_method: none`` and no subject.

Signing costs far more than the rest of a request (ES256: tens of microseconds),
so an assertion is made once per caller and upstream and reused until half its
life has passed: ``jti`` names the assertion, not the request (``X-Request-Id``
does that).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.pipeline.authn import Principal

MAX_KEPT = 10_000  # assertions kept for reuse before the memo starts again
Sign = Callable[[dict[str, Any]], str]


class Assertions:
    def __init__(self, sign: Sign, header: str, ttl: int) -> None:
        self.sign = sign
        self.header = header
        self.ttl = ttl
        self._made: dict[tuple[str | None, str, str], tuple[str, float]] = {}

    def field(self, principal: Principal | None, upstream: str) -> tuple[str, str]:
        """The header and its value for a request of ``principal`` to ``upstream``."""
        now = time.time()
        memo = (  # a narrowed credential is another principal: another assertion
            (principal.credential_id, principal.scope_header, upstream)
            if principal is not None
            else (None, "", upstream)
        )
        made = self._made.get(memo)
        if made is not None and made[1] > now:
            return self.header, made[0]
        if len(self._made) >= MAX_KEPT:
            self._made.clear()
        issued = int(now)
        claims: dict[str, Any] = {"aud": upstream, "iat": issued, "exp": issued + self.ttl,
                                  "jti": secrets.token_urlsafe(16)}  # fmt: skip
        if principal is None:
            claims["auth_method"] = "none"
        else:
            claims.update({
                "sub": principal.user_id or principal.credential_id,
                "org_id": principal.org_id,
                "scope": principal.scope_header,
                "auth_method": principal.method,
                "credential_id": principal.credential_id,
            })  # fmt: skip
            if principal.client_id:
                claims["client_id"] = principal.client_id
        token = self.sign(claims)
        self._made[memo] = (token, now + self.ttl / 2)
        return self.header, token
