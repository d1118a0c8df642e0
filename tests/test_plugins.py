"""Plugin provisioning: ``gateway plugin provision`` makes a client_credentials
client and hands it over as a 0600 env file; a plugin needs nothing else.

The first tests run the CLI as a subprocess on the database of the ``gw``
fixture and use the credentials at its token endpoint. The last one is the
whole story with real processes: a served gateway, its upstream, and a small
plugin program that is given only the env file.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from cli_runner import assert_refused, cli_json, run_cli, write_config
from conftest import Gateway, base_config, free_port
from oauth_helpers import basic_auth, bearer, echoed, oauth_error
from processes import clean_env, stop, wait_until_answers

PLUGIN = "crm-sync"
ENV_NAMES = ["OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_TOKEN_URL", "API_BASE_URL"]
PLUGIN_TIMEOUT = 15.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def plugins_config(config: dict[str, Any]) -> dict[str, Any]:
    config["plugins"] = [{"name": PLUGIN, "org": "acme", "scopes": ["contacts:read"]}]
    return config


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    return plugins_config(config)


@pytest.fixture
async def config_path(gw: Gateway, config: dict[str, Any], tmp_path: Path) -> Path:
    """The ``gw`` fixture's config as a file, with the organizations the tests use."""
    await gw.org("acme")
    await gw.org("globex")
    return write_config(tmp_path / "gateway.yaml", config)


def read_env_file(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines]
    assert all(len(p) == 2 for p in pairs), lines
    values = dict((name, value) for name, value in pairs)
    assert list(values) == ENV_NAMES, lines
    return values


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def client_credentials(gw: Gateway, client_id: str, secret: str) -> aiohttp.ClientResponse:
    return await gw.client.post(
        gw.settings.oauth.paths.token,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(client_id, secret)},
    )


async def access_token(gw: Gateway, client_id: str, secret: str) -> dict[str, Any]:
    resp = await client_credentials(gw, client_id, secret)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    assert "refresh_token" not in body
    return body


async def echo_as(gw: Gateway, token: str) -> dict[str, Any]:
    resp = await gw.client.get("/echo/plugin", headers=bearer(token))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


# --- provisioning through the CLI -----------------------------------------------------


async def test_provision_creates_a_client_and_a_0600_env_file(
    gw: Gateway, config_path: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "billing-bot.env"
    # A file already there with wider permissions is replaced, never left readable.
    env_file.write_text("STALE=1\n")
    env_file.chmod(0o644)

    out = await cli_json(
        config_path, "plugin", "provision", "billing-bot",
        "--org", "acme", "--scopes", "contacts:read", "--env-file", str(env_file),
    )  # fmt: skip
    acme = await gw.org("acme")
    assert out["rotated"] is False
    assert out["org_id"] == acme.id
    assert out["grant_types"] == ["client_credentials"]
    assert out["allowed_scopes"] == ["contacts:read"]
    assert out["public"] is False
    assert out["env_file"] == str(env_file)

    assert mode(env_file) == 0o600
    assert sorted(p.name for p in tmp_path.glob("billing-bot.env*")) == ["billing-bot.env"]
    env = read_env_file(env_file)
    issuer = str(gw.settings.public_url).rstrip("/")
    assert env == {
        "OAUTH_CLIENT_ID": out["client_id"],
        "OAUTH_CLIENT_SECRET": out["client_secret"],
        "OAUTH_TOKEN_URL": issuer + gw.settings.oauth.paths.token,
        "API_BASE_URL": issuer,
    }

    stored = await gw.store.get_client(out["client_id"])
    assert stored is not None
    assert stored.client.name == "plugin:billing-bot"
    assert stored.client.grant_types == ("client_credentials",)

    token = await access_token(gw, env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"])
    assert token["scope"] == "contacts:read"
    echo = await echo_as(gw, token["access_token"])
    assert echoed(echo, "X-Org-Id") == [acme.id]
    assert echoed(echo, "X-Client-Id") == [out["client_id"]]
    assert echoed(echo, "X-Auth-Method") == ["oauth"]
    resp = await gw.client.get("/contacts", headers=bearer(token["access_token"]))
    assert resp.status == 200, await resp.text()


async def test_provision_takes_org_and_scopes_from_the_plugins_config(
    gw: Gateway, config_path: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "crm.env"
    out = await cli_json(config_path, "plugin", "provision", PLUGIN, "--env-file", str(env_file))
    acme = await gw.org("acme")
    assert out["org_id"] == acme.id
    assert out["allowed_scopes"] == ["contacts:read"]
    assert mode(env_file) == 0o600
    env = read_env_file(env_file)
    assert env["OAUTH_CLIENT_ID"] == out["client_id"]
    token = await access_token(gw, env["OAUTH_CLIENT_ID"], env["OAUTH_CLIENT_SECRET"])
    assert echoed(await echo_as(gw, token["access_token"]), "X-Org-Id") == [acme.id]

    # Flags override the config's defaults.
    globex = await cli_json(config_path, "plugin", "provision", "other", "--org", "globex",
                            "--scopes", "contacts:read,products:read")  # fmt: skip
    assert globex["org_id"] == (await gw.org("globex")).id
    assert globex["allowed_scopes"] == ["contacts:read", "products:read"]


async def test_provision_of_an_unknown_plugin_without_flags_is_refused(
    gw: Gateway, config_path: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "nobody.env"
    result = await run_cli(
        config_path, "plugin", "provision", "nobody", "--env-file", str(env_file), "--json"
    )
    assert_refused(result, "nobody")
    assert not env_file.exists()
    assert await gw.store.list_clients_page((await gw.org()).id, None, 100) == []


async def test_provisioning_again_rotates_the_secret_and_keeps_the_client(
    gw: Gateway, config_path: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "crm.env"
    first = await cli_json(config_path, "plugin", "provision", PLUGIN, "--env-file", str(env_file))
    old = read_env_file(env_file)
    old_token = await access_token(gw, old["OAUTH_CLIENT_ID"], old["OAUTH_CLIENT_SECRET"])

    second = await cli_json(config_path, "plugin", "provision", PLUGIN, "--env-file", str(env_file))
    new = read_env_file(env_file)
    assert second["rotated"] is True
    assert second["client_id"] == first["client_id"] == new["OAUTH_CLIENT_ID"]
    assert second["client_secret"] == new["OAUTH_CLIENT_SECRET"] != old["OAUTH_CLIENT_SECRET"]
    assert mode(env_file) == 0o600

    resp = await client_credentials(gw, old["OAUTH_CLIENT_ID"], old["OAUTH_CLIENT_SECRET"])
    await oauth_error(resp, 401, "invalid_client")
    new_token = await access_token(gw, new["OAUTH_CLIENT_ID"], new["OAUTH_CLIENT_SECRET"])
    assert (await echo_as(gw, new_token["access_token"]))["path"] == "/echo/plugin"
    # Documented: a token minted before the rotation lives until it expires.
    await echo_as(gw, old_token["access_token"])

    acme = await gw.org("acme")
    named = [
        c for c in await gw.store.list_clients_page(acme.id, None, 100)
        if c.name == f"plugin:{PLUGIN}"
    ]  # fmt: skip
    assert [c.id for c in named] == [first["client_id"]]


# --- a plugin process against a served gateway ----------------------------------------

PLUGIN_PROGRAM = '''\
"""A plugin: its env file is all it knows about the gateway."""
import base64
import json
import sys
import urllib.parse
import urllib.request


def read_env(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            name, sep, value = line.strip().partition("=")
            if sep:
                values[name] = value
    return values


def main():
    env = read_env(sys.argv[1])
    pair = ":".join(
        urllib.parse.quote_plus(env[name]) for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET")
    )
    request = urllib.request.Request(
        env["OAUTH_TOKEN_URL"],
        data=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        token = json.load(response)

    def get(path):
        request = urllib.request.Request(
            env["API_BASE_URL"] + path,
            headers={"Authorization": "Bearer " + token["access_token"]},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    print(json.dumps({"scope": token["scope"], "contacts": get("/contacts"),
                      "echo": get("/echo/from-plugin")}))


main()
'''


@dataclass
class Served:
    public: str
    config_path: Path


@pytest.fixture
def log_files(tmp_path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    with (
        (tmp_path / "upstream.log").open("wb") as upstream,
        (tmp_path / "gateway.stderr").open("wb") as gateway,
    ):
        yield upstream, gateway


@pytest.fixture
async def served(tmp_path: Path, log_files: tuple[IO[bytes], IO[bytes]]) -> AsyncIterator[Served]:
    """upstream_example and ``gateway serve`` as processes; public_url is the served address."""
    upstream_log, gateway_log = log_files
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "upstream_example", "--port", str(upstream_port)],
            cwd=tmp_path, env=clean_env(), stdout=upstream_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(upstream)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        await wait_until_answers(f"{upstream_url}/status", upstream, tmp_path / "upstream.log")

        config = plugins_config(base_config(upstream_url, tmp_path / "gateway.db"))
        public_port, admin_port = free_port(), free_port()
        public = f"http://127.0.0.1:{public_port}"
        config["listen"]["port"] = public_port
        config["admin"]["port"] = admin_port
        config["public_url"] = public
        config_path = write_config(tmp_path / "gateway.yaml", config)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config_path), "serve"],
            cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=gateway_log,
        )  # fmt: skip
        procs.append(gateway)
        await wait_until_answers(
            f"http://127.0.0.1:{admin_port}/healthz", gateway, tmp_path / "gateway.stderr"
        )
        yield Served(public, config_path)
    finally:
        for proc in reversed(procs):
            stop(proc)


async def add_contact(served: Served, org: str, name: str) -> None:
    """Through the served gateway, with a key minted by the CLI for ``org``."""
    key = await cli_json(
        served.config_path, "key", "create", "--org", org, "--name", "seed",
        "--scopes", "contacts:write",
    )  # fmt: skip
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
        http.post(
            f"{served.public}/contacts", json={"name": name}, headers={"X-API-Key": key["key"]}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()


async def run_plugin(program: Path, env_file: Path, workdir: Path) -> dict[str, Any]:
    """Run the plugin with nothing but PATH in its environment; its one JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(program), str(env_file),
        cwd=workdir, env={"PATH": os.environ["PATH"]},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PLUGIN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the plugin did not finish within {PLUGIN_TIMEOUT} s") from None
    assert proc.returncode == 0, err.decode()
    data = json.loads(out)
    assert isinstance(data, dict), data
    return data


async def test_a_plugin_process_works_from_its_env_file_alone(
    served: Served, tmp_path: Path
) -> None:
    acme = await cli_json(served.config_path, "org", "create", "acme")
    await cli_json(served.config_path, "org", "create", "globex")
    await add_contact(served, "acme", "Ada from acme")
    await add_contact(served, "globex", "Grace from globex")

    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    env_file = plugin_dir / f"{PLUGIN}.env"
    provisioned = await cli_json(
        served.config_path, "plugin", "provision", PLUGIN, "--env-file", str(env_file)
    )
    assert mode(env_file) == 0o600
    env = read_env_file(env_file)
    assert env["API_BASE_URL"] == served.public
    assert env["OAUTH_TOKEN_URL"] == served.public + "/oauth/token"

    program = plugin_dir / "plugin.py"
    program.write_text(PLUGIN_PROGRAM, encoding="utf-8")
    result = await run_plugin(program, env_file, plugin_dir)

    assert result["scope"] == "contacts:read"
    # The upstream answered for the plugin's organization only.
    assert [c["name"] for c in result["contacts"]["data"]] == ["Ada from acme"]
    echo = result["echo"]
    assert echo["path"] == "/echo/from-plugin"
    assert echoed(echo, "X-Org-Id") == [acme["id"]]
    assert echoed(echo, "X-Client-Id") == [provisioned["client_id"]]
    assert echoed(echo, "X-Auth-Method") == ["oauth"]
    assert echoed(echo, "X-Scopes") == ["contacts:read"]
