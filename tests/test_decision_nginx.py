"""The README's nginx ``auth_request`` configuration, run as written, in front of the
project's ``config.yaml`` with the decision endpoint on: Debian's nginx as this
test's own process, the gateway and upstream_example as processes, on the
example's fixed ports (8000, 8080, 9001; the test fails naming a taken one).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cli_runner import cli_json
from nodes import ROOT, Example, readme_block
from processes import clean_env, wait_until_answers

PORTS = (8000, 8080, 9090, 9001)
NGINX = "http://127.0.0.1:8000"


@pytest.fixture
async def behind_nginx(tmp_path: Path) -> AsyncIterator[Path]:
    """The example running; the gateway's config file (the project's, with the
    decision endpoint on and an /echo route that shows what the upstream receives)."""
    example = Example(tmp_path, PORTS)
    config: dict[str, Any] = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["decision"] = {"enabled": True, "path": "/_gateway/decide"}
    config["proxy"]["trusted_proxies"] = ["127.0.0.1/32"]
    config["routes"].append({"path": "/echo/**", "scopes": ["contacts:read"],
                             "upstream": "contacts"})  # fmt: skip
    config["workers"] = 1
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    await cli_json(config_path, "org", "create", "acme")
    env = clean_env()
    try:
        example.start([sys.executable, "-m", "upstream_example", "--port", "9001"], env)
        gateway = example.start(
            [sys.executable, "-m", "gateway", "--config", str(config_path), "serve"], env
        )
        nginx = example.start_nginx(readme_block("## Behind nginx, Traefik or Envoy", "nginx"))
        await wait_until_answers("http://127.0.0.1:9090/healthz", gateway, example.log_path)
        await wait_until_answers(f"{NGINX}/status", nginx, example.log_path)
        yield config_path
    finally:
        example.close()


async def test_nginx_auth_request_asks_the_gateway_and_passes_the_identity(
    behind_nginx: Path,
) -> None:
    config_path = behind_nginx
    created = await cli_json(config_path, "key", "create", "--org", "acme", "--name", "reader",
                             "--scopes", "contacts:read")  # fmt: skip
    other = await cli_json(config_path, "key", "create", "--org", "acme", "--name", "products",
                           "--scopes", "products:read")  # fmt: skip
    admin = await cli_json(config_path, "key", "create", "--org", "acme", "--name", "admin",
                           "--scopes", "gateway:admin")  # fmt: skip
    reader = {"X-API-Key": created["key"]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        # Allowed: the upstream receives the identity, not the key nor a client's copy.
        spoofed = {**reader, "X-Org-Id": "org_someone_else"}
        async with http.get(f"{NGINX}/echo/x?q=1", headers=spoofed) as resp:
            assert resp.status == 200
            seen = {name.lower(): value for name, value in (await resp.json())["headers"]}
        assert seen["x-org-id"] == created["org_id"]
        assert seen["x-scopes"] == "contacts:read"
        assert seen["x-auth-method"] == "api_key"
        assert seen["x-credential-id"] == created["id"]
        assert "x-request-id" in seen and "x-api-key" not in seen
        async with http.get(f"{NGINX}/functions/v1/api-contacts", headers=reader) as resp:
            assert resp.status == 200

        # Refused, each with the gateway's own status and JSON body.
        async with http.get(f"{NGINX}/echo/x") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
            assert "Bearer" in resp.headers["WWW-Authenticate"]
        async with http.get(f"{NGINX}/echo/x", headers={"X-API-Key": other["key"]}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "forbidden"
        async with http.get(f"{NGINX}/nowhere", headers=reader) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "not_found"
        async with http.get(f"{NGINX}/v1/products/query", headers=reader) as resp:
            assert resp.status == 405
            assert (await resp.json())["error"] == "method_not_allowed"

        # A rate limit reached: 429 with Retry-After.
        patch = {"limits": {"rate_limit": 1}}
        async with http.patch(f"http://127.0.0.1:8080/_gateway/v1/keys/{created['id']}",
                              headers={"X-API-Key": admin["key"]}, json=patch) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
        statuses = []
        for _ in range(3):
            async with http.get(f"{NGINX}/echo/x", headers=reader) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert (await resp.json())["error"] == "rate_limited"
                    assert int(resp.headers["Retry-After"]) >= 1
        assert statuses.count(429) >= 2, statuses
