"""The decision endpoint: a proxy in front (nginx, Traefik, Envoy) asks "may this
request pass, and as whom?" and the gateway judges the original request with the
same pipeline as a proxied call, without forwarding it.

Where the original request is read from, by convention of the proxy that asks:

- nginx ``auth_request``: a request to exactly ``decision.path`` carrying
  ``X-Original-Method`` and ``X-Original-URI``;
- Traefik ``forwardAuth``: a request to exactly ``decision.path`` carrying
  ``X-Forwarded-Method`` and ``X-Forwarded-Uri`` (with ``X-Forwarded-Host`` and
  ``X-Forwarded-Proto``, read as for any trusted proxy);
- Envoy ``ext_authz`` (an HTTP service with ``path_prefix``): a request to
  ``decision.path`` followed by the original path and query, with the original
  method.

Only a peer in ``proxy.trusted_proxies`` is believed; from any other the call is
judged as a request for the decision path itself, which matches no route.

Allowed: 200, an empty body and the identity as response fields (``X-Org-Id``,
``X-Scopes``, ... and ``X-Request-Id``) for the proxy to copy upstream. Refused:
the status, JSON body and ``WWW-Authenticate`` a proxied call would get, with
``X-Gateway-Status`` and ``X-Gateway-Error`` (the body) as fields too. nginx
passes on only 401 and 403 from an auth subrequest (any other status becomes a
500), so to nginx every other refusal is a 403 whose ``X-Gateway-Status`` says
the real one: the README's nginx configuration turns it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError, error_parts
from gateway.pipeline.headers import FieldView, ForwardedFor
from gateway.pipeline.paths import NormalPath

Headers = list[tuple[str, str]]
NGINX_PASSES = frozenset({401, 403})  # statuses nginx's auth_request passes on


@dataclass(frozen=True, slots=True)
class Original:
    """The request a decision is about."""

    method: str
    target: str
    nginx: bool  # asked by nginx auth_request: refusals it cannot pass become 403


class Decisions:
    def __init__(self, path: str, forwarded_for: ForwardedFor) -> None:
        self.path = path
        self.segments = tuple(path.strip("/").split("/"))
        self.forwarded_for = forwarded_for

    def claims(self, path: NormalPath) -> bool:
        """Whether a request is for the decision endpoint (or below it: Envoy)."""
        return path.segments[: len(self.segments)] == self.segments

    def original(self, method: str, target: str, headers: FieldView, peer: str) -> Original:
        if not self.forwarded_for.is_trusted(peer):
            return Original(method, target, nginx=False)  # judged as itself: no route
        nginx_uri = headers.get("X-Original-URI")
        if nginx_uri is not None:
            return Original(headers.get("X-Original-Method") or "GET", nginx_uri, nginx=True)
        traefik_uri = headers.get("X-Forwarded-Uri")
        if traefik_uri is not None:
            return Original(headers.get("X-Forwarded-Method") or method, traefik_uri, nginx=False)
        below = target[len(self.path) :]
        if target.startswith(self.path) and below[:1] in ("/", "?"):  # Envoy's path_prefix
            return Original(method, below if below.startswith("/") else "/" + below, False)
        return Original(method, target, nginx=False)


def refusal(error: GatewayError, request_id: str, nginx: bool) -> tuple[int, Headers, bytes]:
    """A refused decision: status, fields and body."""
    headers, body = error_parts(error, request_id)
    headers = [*headers, ("X-Gateway-Status", str(error.status)),
               ("X-Gateway-Error", body.decode())]  # fmt: skip
    status = error.status if not nginx or error.status in NGINX_PASSES else 403
    return status, headers, body
