"""JWT access tokens (RFC 9068), when ``tokens.format: jwt``.

Upstreams can verify such a token themselves with the keys published at
``/.well-known/jwks.json``. The gateway still stores the token's digest like an
opaque token's, so revocation, introspection and the route→scope check work
the same way: a revoked JWT is refused at the gateway even though its
signature stays valid. Keys come from PEM files named in the config; the first
one signs, and every one listed is published, so a key can be rotated by
adding the new one first and removing the old one after the tokens it signed
have expired.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.config import Settings
from gateway.errors import ConfigError

JWKS_PATH = "/.well-known/jwks.json"
JWT_PREFIX = "eyJ"  # base64url of '{"' — every JWT starts so
LEEWAY = 5  # seconds of clock skew tolerated


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    algorithm: str
    private: Any
    public_jwk: dict[str, Any]


def load_keys(settings: Settings) -> list[Key]:
    keys = []
    for i, spec in enumerate(settings.tokens.signing_keys):
        path = settings.path_of(spec.private_key_file)
        try:
            private = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                [f"{settings.source}: tokens.signing_keys[{i}].private_key_file: "
                 f"cannot load a PEM private key from {path}: {exc}"]
            ) from None  # fmt: skip
        algorithm = RSAAlgorithm if spec.algorithm == "RS256" else ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
        jwk.update({"kid": spec.kid, "alg": spec.algorithm, "use": "sig"})
        keys.append(Key(spec.kid, spec.algorithm, private, jwk))
    return keys


class JwtCodec:
    def __init__(self, settings: Settings, keys: list[Key]) -> None:
        self.keys = keys
        self.by_kid = {k.kid: k for k in keys}
        self.issuer = str(settings.public_url).rstrip("/")
        self.audience = settings.tokens.audience or self.issuer

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    def encode(self, claims: dict[str, Any]) -> str:
        """An access token (RFC 9068)."""
        return self.sign({"aud": self.audience, **claims}, "at+jwt")

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        """Any JWT the gateway issues, by the first key: ``iss`` is public_url."""
        key = self.keys[0]
        headers = {"kid": key.kid, "typ": typ}
        return jwt.encode({"iss": self.issuer, **claims}, key.private, algorithm=key.algorithm,
                          headers=headers)  # fmt: skip

    def valid(self, token: str) -> bool:
        """Signature, issuer, audience and times: the local check before any lookup."""
        try:
            header = jwt.get_unverified_header(token)
            key = self.by_kid.get(str(header.get("kid")))
            if key is None or header.get("alg") != key.algorithm:
                return False
            jwt.decode(
                token,
                key.private.public_key(),
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "jti", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        return True


def now() -> int:
    return int(time.time())
