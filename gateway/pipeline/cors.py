"""CORS on a route (``routes[].cors``), as the Fetch standard's CORS protocol asks:

- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  for a route with CORS is answered by the gateway itself, without a credential,
  and never forwarded: an allowed origin gets the ``Access-Control-Allow-*``
  fields, any other origin none of them;
- an actual response (the upstream's answer, or the gateway's refusal, so that a
  page can read why it was refused) names an allowed origin in
  ``Access-Control-Allow-Origin``, with ``Vary: Origin``.

``*`` stands for every origin, and only without credentials (the config refuses
it otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Cors

Headers = list[tuple[str, str]]
VARY = ("Vary", "Origin")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]
    any_origin: bool
    methods: str
    headers: str
    expose: str
    max_age: str
    credentials: bool

    @classmethod
    def of(cls, cors: Cors, route_methods: frozenset[str] | None) -> CorsPolicy:
        methods = cors.methods or (sorted(route_methods) if route_methods else
                                   ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))  # fmt: skip
        return cls(
            origins=frozenset(o for o in cors.origins if o != "*"),
            any_origin="*" in cors.origins,
            methods=", ".join(m.upper() for m in methods),
            headers=", ".join(cors.headers),
            expose=", ".join(cors.expose_headers),
            max_age=str(cors.max_age),
            credentials=cors.credentials,
        )

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin.lower() in self.origins)

    def _origin(self, origin: str) -> Headers:
        named = "*" if self.any_origin and not self.credentials else origin
        fields = [("Access-Control-Allow-Origin", named), VARY]
        if self.credentials:
            fields.append(("Access-Control-Allow-Credentials", "true"))
        return fields

    def preflight(self, origin: str | None) -> Headers:
        """The fields of a preflight's answer (204)."""
        if origin is None or not self.allows(origin):
            return [VARY]
        return [
            *self._origin(origin),
            ("Access-Control-Allow-Methods", self.methods),
            ("Access-Control-Allow-Headers", self.headers),
            ("Access-Control-Max-Age", self.max_age),
        ]

    def actual(self, origin: str | None) -> Headers:
        """The fields added to an actual response."""
        if origin is None or not self.allows(origin):
            return [VARY]
        fields = self._origin(origin)
        if self.expose:
            fields.append(("Access-Control-Expose-Headers", self.expose))
        return fields


def is_preflight(method: str, origin: str | None, requested: str | None) -> bool:
    return method == "OPTIONS" and origin is not None and requested is not None
