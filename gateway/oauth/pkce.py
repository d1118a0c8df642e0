"""PKCE, RFC 7636, S256 only (RFC 9700 §2.1.1: ``plain`` is not offered)."""

from __future__ import annotations

import hmac
import re

from gateway import crypto
from gateway.errors import InvalidGrant, InvalidRequest

# §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# An S256 challenge is BASE64URL of 32 bytes: exactly 43 characters.
S256_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def check_challenge(challenge: str | None, method: str | None, required: bool) -> str | None:
    """Validate the authorization request's PKCE parameters (§4.3)."""
    if challenge is None:
        if method is not None:
            raise InvalidRequest("code_challenge_method was sent without code_challenge.")
        if required:
            raise InvalidRequest("PKCE is required: send code_challenge with method S256.")
        return None
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256 (plain is not supported).")
    if not S256_CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge is not a BASE64URL-encoded SHA-256 digest.")
    return challenge


def verify(challenge: str | None, verifier: str | None) -> None:
    """§4.6 at the token endpoint; a verifier for a code issued without a challenge is
    refused too, so PKCE cannot be downgraded (RFC 9700 §2.1.1)."""
    if challenge is None:
        if verifier is not None:
            raise InvalidGrant("code_verifier was sent but the code was issued without PKCE.")
        return
    if verifier is None:
        raise InvalidGrant("code_verifier is required for this code.")
    if not VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier is malformed.")
    if not hmac.compare_digest(crypto.s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge.")
