"""JWT access tokens (tokens.format: jwt): verifiable by upstreams through the
JWKS, still checked, scoped and revocable at the gateway."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import Gateway
from cryptography.hazmat.primitives import serialization
from oauth_helpers import write_key

from gateway.config import settings_from_dict
from gateway.errors import ConfigError

ISSUER = "http://127.0.0.1:8080"


@pytest.fixture
def config(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    write_key(tmp_path / "new.pem", "ec")
    write_key(tmp_path / "old.pem", "rsa")
    config["tokens"] = {
        "format": "jwt",
        "signing_keys": [
            {"kid": "2026-11", "algorithm": "ES256", "private_key_file": "new.pem"},
            {"kid": "2026-10", "algorithm": "RS256", "private_key_file": "old.pem"},
        ],
    }
    return config


async def client_credentials_token(gw: Gateway) -> tuple[str, str, str]:
    app = await gw.oauth_client(
        name="Sync", grant_types=("client_credentials",), org="acme", scopes=("contacts:read",)
    )
    assert app.secret is not None
    resp = await gw.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": app.client.id,
              "client_secret": app.secret},
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    return (await resp.json())["access_token"], app.client.id, app.secret


async def test_jwt_access_token_verifies_with_the_published_keys(gw: Gateway) -> None:
    token, client_id, _ = await client_credentials_token(gw)
    keys = await (await gw.client.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in keys["keys"]] == ["2026-11", "2026-10"]
    header = jwt.get_unverified_header(token)
    assert header["kid"] == "2026-11" and header["typ"] == "at+jwt" and header["alg"] == "ES256"
    jwk = next(k for k in keys["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, public, algorithms=["ES256"], audience=ISSUER, issuer=ISSUER)
    org = await gw.org()
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id
    assert claims["scope"] == "contacts:read"
    assert claims["org_id"] == org.id
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"].startswith("tok_")
    metadata = await (await gw.client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["jwks_uri"] == ISSUER + "/.well-known/jwks.json"


async def test_jwt_is_used_like_any_token_and_revocation_still_applies(gw: Gateway) -> None:
    token, client_id, secret = await client_credentials_token(gw)
    headers = {"Authorization": f"Bearer {token}"}
    echo = await (await gw.client.get("/echo/x", headers=headers)).json()
    sent = {k.lower(): v for k, v in echo["headers"]}
    assert sent["x-auth-method"] == "oauth" and sent["x-client-id"] == client_id
    assert (await gw.client.post("/contacts", json={"name": "A"}, headers=headers)).status == 403
    introspected = await (
        await gw.client.post("/oauth/introspect", data={"token": token, "client_id": client_id,
                                                         "client_secret": secret})
    ).json()  # fmt: skip
    assert introspected["active"] is True and introspected["scope"] == "contacts:read"
    revoked = await gw.client.post(
        "/oauth/revoke", data={"token": token, "client_id": client_id, "client_secret": secret}
    )
    assert revoked.status == 200
    deadline = time.monotonic() + 1
    status = 200
    while status != 401 and time.monotonic() < deadline:
        status = (await gw.client.get("/contacts", headers=headers)).status
    assert status == 401  # the signature is still valid; the gateway's record says revoked


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_and_altered_jwts_are_refused(gw: Gateway, tmp_path: Path) -> None:
    token, _, _ = await client_credentials_token(gw)
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    widened = f"{head}.{b64({**claims, 'scope': 'contacts:read contacts:write'})}.{signature}"
    unsigned = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': '2026-11'})}.{payload}."
    write_key(tmp_path / "attacker.pem", "ec")
    attacker = serialization.load_pem_private_key(
        (tmp_path / "attacker.pem").read_bytes(), password=None
    )
    forged = jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": "2026-11"})  # type: ignore[arg-type]
    for bad in (widened, unsigned, forged, token[:-4] + "AAAA"):
        resp = await gw.client.get("/contacts", headers={"Authorization": f"Bearer {bad}"})
        assert resp.status == 401, bad
        assert (await resp.json())["error"] == "unauthorized"


def test_jwt_needs_a_signing_key() -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_dict({"tokens": {"format": "jwt"}})
    assert "tokens.signing_keys" in str(raised.value)
