"""The signed identity assertion, verified the way an upstream would: PyJWT against
the gateway's published key set."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import Gateway
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from oauth_helpers import write_key

from gateway.config import settings_from_dict
from gateway.errors import ConfigError

HEADER = "X-Gateway-Assertion"
ISSUER = "http://127.0.0.1:8080"


@pytest.fixture
def config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    write_key(tmp_path / "signing.pem", "ec")
    config["tokens"] = {  # opaque access tokens; the keys sign the assertions
        "signing_keys": [{"kid": "k1", "algorithm": "ES256", "private_key_file": "signing.pem"}]
    }
    config["identity_assertion"] = {"enabled": True, "ttl": 60}
    config["decision"] = {"enabled": True}
    config["proxy"] = {"trusted_proxies": ["127.0.0.1/32"]}
    config["routes"].insert(0, {"path": "/open/**", "auth": "none", "upstream": "main",
                                "strip_prefix": "/open"})  # fmt: skip
    return config


async def received(gw: Gateway, path: str, headers: dict[str, str]) -> list[str]:
    """The assertions the upstream received (``/echo`` shows every header)."""
    resp = await gw.client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return [
        value for name, value in (await resp.json())["headers"] if name.lower() == HEADER.lower()
    ]


async def verify(gw: Gateway, token: str, audience: str) -> dict[str, Any]:
    """What an upstream does: the key named by ``kid`` from the JWKS, then PyJWT."""
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    required = {"require": ["exp", "iat", "jti"]}
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER, options=required
    )
    return claims


async def test_a_forwarded_request_carries_a_verifiable_assertion(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    forged = {"X-API-Key": key.secret, HEADER: "eyJhbGciOiJub25lIn0.e30."}
    [token] = await received(gw, "/echo/x", forged)  # the client's copy never arrives
    claims = await verify(gw, token, audience="main")
    assert claims["sub"] == key.record.id
    assert claims["org_id"] == (await gw.org()).id
    assert claims["scope"] == "contacts:read"
    assert claims["auth_method"] == "api_key"
    assert claims["credential_id"] == key.record.id
    assert 0 < claims["exp"] - claims["iat"] <= 60
    with pytest.raises(jwt.InvalidAudienceError):  # for another upstream it is no proof
        await verify(gw, token, audience="billing")
    # A public route's request carries one too, with no subject.
    [public] = await received(gw, "/open/echo/x", {})
    assert (await verify(gw, public, audience="main"))["auth_method"] == "none"


async def test_an_allowed_decision_carries_the_assertion(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/_gateway/decide", headers={
        "X-API-Key": key.secret, "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/contacts",
    })  # fmt: skip
    assert resp.status == 200
    assert (await verify(gw, resp.headers[HEADER], audience="main"))["sub"] == key.record.id


async def test_forged_and_expired_assertions_fail_verification(gw: Gateway, tmp_path: Path) -> None:
    key = await gw.mint(["contacts:read"])
    [token] = await received(gw, "/echo/x", {"X-API-Key": key.secret})
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({**claims, "org_id": "org_victim"}, stranger, algorithm="ES256",
                        headers={"kid": "k1"})  # fmt: skip
    with pytest.raises(jwt.InvalidSignatureError):
        await verify(gw, forged, audience="main")
    ours = serialization.load_pem_private_key((tmp_path / "signing.pem").read_bytes(), None)
    old = int(time.time()) - 120
    expired = jwt.encode({**claims, "iat": old, "exp": old + 60}, ours, algorithm="ES256",  # type: ignore[arg-type]
                         headers={"kid": "k1"})  # fmt: skip
    with pytest.raises(jwt.ExpiredSignatureError):
        await verify(gw, expired, audience="main")


def readme_verifier(jwks_url: str) -> Any:
    """The README's upstream code, pointed at this gateway's key set: its ``caller``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Signed identity assertion") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1).replace(ISSUER + "/.well-known/jwks.json", jwks_url), namespace)
    return namespace["caller"]


async def test_the_readme_s_upstream_code_verifies_the_assertion(gw: Gateway) -> None:
    caller = readme_verifier(str(gw.client.make_url("/.well-known/jwks.json")))
    key = await gw.mint(["contacts:read"])
    [token] = await received(gw, "/echo/x", {"X-API-Key": key.secret})
    headers = {HEADER: token}
    # PyJWKClient fetches the key set with a blocking call: from a thread, as an upstream would.
    claims = await asyncio.to_thread(caller, headers, "main")
    assert claims["credential_id"] == key.record.id
    with pytest.raises(jwt.InvalidAudienceError):
        await asyncio.to_thread(caller, headers, "contacts")
    with pytest.raises(jwt.PyJWTError):
        await asyncio.to_thread(caller, {HEADER: token[:-4] + "AAAA"}, "main")


def test_assertions_need_a_signing_key(config: dict[str, Any]) -> None:
    config["tokens"] = {}
    with pytest.raises(ConfigError) as raised:
        settings_from_dict(config)
    assert "identity assertions need at least one signing key" in str(raised.value)
