"""Secrets: generate, digest, compare.

API keys look like ``gwk_<30 random base62 chars><6-char checksum>``. The
prefix lets secret scanners spot a leaked key; the CRC-32 checksum lets the
gateway (and scanners) reject a mistyped or made-up key without a lookup.
Keys carry about 178 bits of randomness, so a plain SHA-256 digest is the right
stored form: a slow password hash would add nothing but latency on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
API_KEY_PREFIX = "gwk_"
RANDOM_CHARS = 30
CHECKSUM_CHARS = 6
DISPLAY_PREFIX_CHARS = len(API_KEY_PREFIX) + 8


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


def new_api_key() -> str:
    return new_secret(API_KEY_PREFIX)


def well_formed(secret: str, prefix: str) -> bool:
    """Cheap structural check before any lookup (prefix, length, alphabet, checksum)."""
    if len(secret) != len(prefix) + RANDOM_CHARS + CHECKSUM_CHARS or not secret.startswith(prefix):
        return False
    body, check = secret[:-CHECKSUM_CHARS], secret[-CHECKSUM_CHARS:]
    if not body[len(prefix) :].isascii() or not body[len(prefix) :].isalnum():
        return False
    return hmac.compare_digest(check, checksum(body))


def digest(secret: str) -> str:
    """The only form in which a secret is stored: hex SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def display_prefix(secret: str) -> str:
    """The leading characters shown in listings so a person can tell keys apart."""
    return secret[:DISPLAY_PREFIX_CHARS]


def new_id(kind: str) -> str:
    """A public identifier such as ``org_5Xk2...``: random, not secret."""
    return f"{kind}_{secrets.token_hex(8)}"
