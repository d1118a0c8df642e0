"""Secrets: generate, digest, compare.

API keys look like ``gwk_live_<30 random base62 chars><6-char checksum>`` (or
``gwk_test_`` for a test-mode key; keys issued before test mode existed read
``gwk_`` and are live). The prefix lets secret scanners spot a leaked key, and a
person tell a test key from a live one; the CRC-32 checksum lets the
gateway (and scanners) reject a mistyped or made-up key without a lookup.
Keys carry about 178 bits of randomness, so a plain SHA-256 digest is the right
stored form: a slow password hash would add nothing but latency on every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
API_KEY_PREFIX = "gwk_"
KEY_PREFIXES = {"live": "gwk_live_", "test": "gwk_test_"}  # by environment
ACCESS_TOKEN_PREFIX = "gwa_"  # noqa: S105 - prefixes, not secrets
REFRESH_TOKEN_PREFIX = "gwr_"  # noqa: S105
CODE_PREFIX = "gwc_"
CLIENT_SECRET_PREFIX = "gws_"  # noqa: S105
RANDOM_CHARS = 30
CHECKSUM_CHARS = 6
DISPLAY_RANDOM_CHARS = 8  # of the random part, shown in listings


def base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars))


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def new_secret(prefix: str) -> str:
    """A random secret with a recognisable prefix and a trailing checksum."""
    body = prefix + "".join(secrets.choice(BASE62) for _ in range(RANDOM_CHARS))
    return body + checksum(body)


def new_api_key(environment: str = "live") -> str:
    return new_secret(KEY_PREFIXES[environment])


def well_formed_key(secret: str) -> bool:
    """An API key of any environment, or of the format before environments."""
    prefix = secret[:9] if secret[4:9] in ("live_", "test_") else API_KEY_PREFIX
    return well_formed(secret, prefix)


def well_formed(secret: str, prefix: str) -> bool:
    """Cheap structural check before any lookup (prefix, length, alphabet, checksum)."""
    if len(secret) != len(prefix) + RANDOM_CHARS + CHECKSUM_CHARS or not secret.startswith(prefix):
        return False
    rest = secret[len(prefix) :]
    if not rest.isascii() or not rest.isalnum():
        return False
    body, check = secret[:-CHECKSUM_CHARS], secret[-CHECKSUM_CHARS:]
    return hmac.compare_digest(check, checksum(body))


def digest(secret: str) -> str:
    """The only form in which a secret is stored: hex SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def display_prefix(secret: str) -> str:
    """The leading characters shown in listings so a person can tell keys apart: the
    prefix (with its environment) and a few random characters."""
    prefix = secret[:9] if secret[4:9] in ("live_", "test_") else secret[:4]
    return secret[: len(prefix) + DISPLAY_RANDOM_CHARS]


def new_id(kind: str) -> str:
    """A public identifier such as ``org_5Xk2...``: random, not secret."""
    return f"{kind}_{secrets.token_hex(8)}"


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHasher:
    """Argon2id with argon2-cffi's current defaults (RFC 9106 low-memory profile)."""
    return PasswordHasher()


def hash_password(password: str) -> str:
    """Slow on purpose: call it in a thread, never on the event loop."""
    return password_hasher().hash(password)


# A real hash of a random password, so an unknown account costs as much as a wrong password.
@lru_cache(maxsize=1)
def decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest_bytes = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest_bytes).rstrip(b"=").decode("ascii")
