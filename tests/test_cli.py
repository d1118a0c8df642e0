"""The ``gateway`` command, run as a real subprocess (``python -m gateway``).

Each test writes its own config (``base_config``) and SQLite file under
``tmp_path`` and runs the CLI from an empty working directory, so nothing
from the checkout (``./config.yaml``, ``./gateway.db``) can leak in.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_runner import assert_refused, write_config
from conftest import base_config, free_port
from processes import clean_env

CLI_TIMEOUT = 60.0
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def run_gateway(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def parse_rfc3339(text: str) -> datetime:
    assert RFC3339.match(text), text
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, text
    return parsed


@dataclass
class Cli:
    """A config file and database under tmp_path, and a way to run the CLI on them."""

    config_path: Path
    db_path: Path
    workdir: Path

    def run(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_gateway(
            "--config", str(self.config_path), *args, cwd=self.workdir, env=env, stdin=stdin
        )

    def json(self, *args: str) -> dict[str, Any]:
        """Run a ``--json`` command that must succeed; return its one JSON object."""
        result = self.run(*args, "--json")
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1, result.stdout
        data = json.loads(lines[0])
        assert isinstance(data, dict), data
        return data

    def org(self, name: str = "acme") -> dict[str, Any]:
        return self.json("org", "create", name)

    def key(self, org: str, *extra: str, scopes: str = "contacts:read") -> dict[str, Any]:
        return self.json("key", "create", "--org", org, "--name", "ci", "--scopes", scopes, *extra)

    def db_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute(sql, params))


@pytest.fixture
def upstream_url() -> str:
    """Nothing listens here: the CLI never calls the upstream."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def cli(tmp_path: Path, upstream_url: str) -> Cli:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    db_path = tmp_path / "gateway.db"
    config_path = write_config(tmp_path / "gateway.yaml", base_config(upstream_url, db_path))
    return Cli(config_path, db_path, workdir)


# Organizations.


def test_org_create_prints_one_json_object(cli: Cli) -> None:
    org = cli.org("acme")
    assert org["name"] == "acme"
    assert isinstance(org["id"], str) and org["id"]
    assert cli.db_rows("SELECT id, name FROM orgs") == [(org["id"], "acme")]


def test_duplicate_org_name_is_refused(cli: Cli) -> None:
    cli.org("acme")
    assert_refused(cli.run("org", "create", "acme", "--json"), "acme")
    assert len(cli.db_rows("SELECT id FROM orgs")) == 1


@pytest.mark.parametrize("name", ["org_x", " org_x"])
def test_org_name_that_looks_like_an_id_is_refused(cli: Cli, name: str) -> None:
    # The stored name is stripped, so the check must look at the stripped name too.
    assert_refused(cli.run("org", "create", name, "--json"), "org_")
    assert cli.db_rows("SELECT name FROM orgs") == []


def test_org_list_json(cli: Cli) -> None:
    assert cli.json("org", "list") == {"data": []}
    first, second = cli.org("acme"), cli.org("globex")
    listed = cli.json("org", "list")["data"]
    assert [(o["id"], o["name"]) for o in listed] == [
        (first["id"], "acme"),
        (second["id"], "globex"),
    ]


# API keys.


@pytest.mark.parametrize("org_by", ["id", "name"])
def test_key_create_json(cli: Cli, org_by: str) -> None:
    org = cli.org("acme")
    before = datetime.now().astimezone()
    key = cli.key(org[org_by], "--expires-in", "30d", scopes="contacts:read contacts:write")
    after = datetime.now().astimezone()

    assert {"id", "key", "org_id", "scopes", "expires_at"} <= key.keys()
    assert key["org_id"] == org["id"]
    assert key["scopes"] == ["contacts:read", "contacts:write"]
    assert key["key"].startswith("gwk_")
    expires = parse_rfc3339(key["expires_at"])
    # The CLI prints whole seconds, so allow one second below the window.
    assert before + timedelta(days=30, seconds=-1) <= expires <= after + timedelta(days=30)


def test_key_without_expiry_never_expires(cli: Cli) -> None:
    cli.org("acme")
    assert cli.key("acme")["expires_at"] is None


def test_key_is_stored_only_as_its_sha256_digest(cli: Cli) -> None:
    cli.org("acme")
    key = cli.key("acme", "--expires-in", "30d")
    secret: str = key["key"]

    rows = cli.db_rows("SELECT digest FROM api_keys WHERE id = ?", (key["id"],))
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(),)]

    files = [cli.db_path, *(Path(f"{cli.db_path}{s}") for s in ("-wal", "-shm", "-journal"))]
    present = [f for f in files if f.exists()]
    assert cli.db_path in present
    for path in present:
        data = path.read_bytes()
        assert secret.encode() not in data, path
        assert secret.encode("utf-16-le") not in data, path


def test_key_list_shows_the_key_without_its_secret(cli: Cli) -> None:
    cli.org("acme")
    key = cli.key("acme")

    listed = cli.json("key", "list", "--org", "acme")["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0]
    assert listed[0]["revoked_at"] is None
    assert key["key"] not in json.dumps(listed)

    text = cli.run("key", "list", "--org", "acme")
    assert text.returncode == 0, text.stderr
    assert key["id"] in text.stdout
    assert key["key"] not in text.stdout + text.stderr


def test_key_revoke(cli: Cli) -> None:
    org = cli.org("acme")
    key = cli.key(org["id"])
    other = cli.key(org["id"])

    revoked = cli.json("key", "revoke", key["id"])
    assert revoked["id"] == key["id"]
    assert revoked["revoked_at"] is not None
    parse_rfc3339(revoked["revoked_at"])

    listed = {k["id"]: k for k in cli.json("key", "list", "--org", "acme")["data"]}
    assert listed[key["id"]]["revoked_at"] == revoked["revoked_at"]
    assert listed[other["id"]]["revoked_at"] is None
    text = cli.run("key", "list", "--org", "acme")
    assert text.returncode == 0, text.stderr
    (line,) = [line for line in text.stdout.splitlines() if key["id"] in line]
    assert "revoked" in line

    assert_refused(cli.run("key", "revoke", key["id"]), key["id"])
    assert_refused(cli.run("key", "revoke", "key_0000000000000000"), "key_0000000000000000")


# Refusals: exit 2, one line, no traceback.


def test_unknown_org_is_refused(cli: Cli) -> None:
    result = cli.run(
        "key", "create", "--org", "nope", "--name", "n", "--scopes", "contacts:read", "--json"
    )
    assert_refused(result, "nope")
    assert_refused(cli.run("key", "list", "--org", "nope"), "nope")


def test_unknown_scope_is_refused_by_name(cli: Cli) -> None:
    cli.org("acme")
    result = cli.run(
        "key", "create", "--org", "acme", "--name", "n", "--scopes", "contacts:read contacts:wrte"
    )
    assert_refused(result, "contacts:wrte")
    assert cli.db_rows("SELECT id FROM api_keys") == []


def test_bad_duration_is_refused(cli: Cli) -> None:
    cli.org("acme")
    result = cli.run(
        "key", "create", "--org", "acme", "--name", "n", "--scopes", "contacts:read",
        "--expires-in", "5x",
    )  # fmt: skip
    assert_refused(result, "5x")
    assert cli.db_rows("SELECT id FROM api_keys") == []


# Configuration.


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    result = run_gateway("--config", str(missing), "config", "check", cwd=tmp_path)
    assert_refused(result, str(missing))


def test_config_with_unknown_key(tmp_path: Path, upstream_url: str) -> None:
    config = base_config(upstream_url, tmp_path / "gateway.db")
    config["routes"][2]["colour"] = "blue"
    path = write_config(tmp_path / "bad.yaml", config)
    result = run_gateway("--config", str(path), "config", "check", cwd=tmp_path)
    assert_refused(result, str(path), "routes[2].colour")


def test_config_with_unknown_top_level_key(tmp_path: Path, upstream_url: str) -> None:
    config = base_config(upstream_url, tmp_path / "gateway.db")
    config["listn"] = {"port": 1}
    path = write_config(tmp_path / "bad.yaml", config)
    result = run_gateway("--config", str(path), "org", "list", cwd=tmp_path)
    assert_refused(result, str(path), "listn")


def test_config_with_unknown_scope_in_a_route(tmp_path: Path, upstream_url: str) -> None:
    config = base_config(upstream_url, tmp_path / "gateway.db")
    config["routes"][0]["scopes"] = ["contacts:wrte"]
    path = write_config(tmp_path / "bad.yaml", config)
    result = run_gateway("--config", str(path), "config", "check", cwd=tmp_path)
    assert_refused(result, str(path), "routes[0].scopes[0]", "contacts:wrte")


def test_config_check_accepts_a_good_file(cli: Cli) -> None:
    text = cli.run("config", "check")
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    assert str(cli.config_path) in text.stdout
    assert cli.json("config", "check")["ok"] is True


def test_gateway_config_env_is_used_without_config_flag(cli: Cli) -> None:
    # Without --config or GATEWAY_CONFIG the CLI looks for ./config.yaml, absent here.
    assert_refused(run_gateway("org", "list", cwd=cli.workdir), "config.yaml")

    env = clean_env(GATEWAY_CONFIG=str(cli.config_path))
    result = run_gateway("org", "create", "acme", "--json", cwd=cli.workdir, env=env)
    assert result.returncode == 0, result.stderr
    org = json.loads(result.stdout)
    assert cli.db_rows("SELECT id, name FROM orgs") == [(org["id"], "acme")]


def test_gateway_database_url_overrides_the_file(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    env = clean_env(GATEWAY_DATABASE_URL=f"sqlite:///{other}")
    result = cli.run("org", "create", "acme", "--json", env=env)
    assert result.returncode == 0, result.stderr
    org = json.loads(result.stdout)

    with sqlite3.connect(other) as db:
        assert list(db.execute("SELECT id, name FROM orgs")) == [(org["id"], "acme")]
    assert not cli.db_path.exists() or cli.db_rows("SELECT id FROM orgs") == []
    assert cli.json("org", "list") == {"data": []}


# The route map.


def test_routes_explain(cli: Cli, upstream_url: str) -> None:
    result = cli.run("routes", "explain", "GET", "/contacts")
    assert result.returncode == 0, result.stderr
    assert "/contacts" in result.stdout
    assert "contacts:read" in result.stdout
    assert f"{upstream_url}/contacts" in result.stdout


def test_routes_explain_json(cli: Cli, upstream_url: str) -> None:
    data = cli.json("routes", "explain", "GET", "/contacts")
    assert data["path"] == "/contacts"
    assert data["scopes"] == ["contacts:read"]
    assert data["upstream"] == "main"
    assert data["upstream_url"] == f"{upstream_url}/contacts"

    strip = cli.json("routes", "explain", "POST", "/admin/echo/a/b?x=1")
    assert strip["scopes"] == ["admin:all"]
    assert strip["upstream_url"] == f"{upstream_url}/echo/a/b?x=1"


def test_routes_explain_without_a_match(cli: Cli) -> None:
    assert_refused(cli.run("routes", "explain", "GET", "/nowhere"), "404 not_found")
    assert_refused(cli.run("routes", "explain", "GET", "/nowhere", "--json"), "404")


def test_routes_explain_gives_the_server_s_own_405(cli: Cli) -> None:
    """/contacts/{id} answers GET (and HEAD), /contacts/** POST, PATCH and DELETE."""
    assert_refused(cli.run("routes", "explain", "PUT", "/contacts/42"),
                   "405 method_not_allowed", "Allow: DELETE, GET, HEAD, PATCH, POST")  # fmt: skip


# Every command says what it does, and one without its subcommand shows them.


@pytest.mark.parametrize("group", ["org", "key", "user", "client", "wallet", "config", "routes"])
def test_a_group_without_its_subcommand_prints_its_usage(cli: Cli, group: str) -> None:
    result = cli.run(group)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: gateway {group}"), result.stderr
    listed = [line.split() for line in result.stderr.splitlines() if re.match(r"    \S", line)]
    assert listed and all(len(words) > 1 for words in listed), result.stderr  # each described


def test_key_rotate_shows_the_new_secret_once_and_the_old_stops(cli: Cli) -> None:
    cli.org()
    key = cli.key("acme")
    rotated = cli.json("key", "rotate", key["id"])
    assert rotated["id"] == key["id"] and rotated["key"] != key["key"]
    assert rotated["key"].startswith("gwk_live_")
    digest = cli.db_rows("SELECT digest FROM api_keys WHERE id = ?", (key["id"],))
    assert digest == [(hashlib.sha256(rotated["key"].encode()).hexdigest(),)]
    assert_refused(cli.run("key", "rotate", "key_nope"), "unknown key")


def test_user_list_shows_members_and_their_roles(cli: Cli) -> None:
    cli.org("acme")
    cli.org("globex")
    for email, org in (("ada@example.com", "acme"), ("bob@example.com", "globex")):
        result = cli.run("user", "create", email, "--org", org, "--role", "admin",
                         "--password-stdin", stdin="correct horse battery staple\n")  # fmt: skip
        assert result.returncode == 0, result.stderr
    everyone = cli.json("user", "list")["data"]
    assert [(u["email"], u["orgs"]) for u in everyone] == [
        ("ada@example.com", {"acme": "admin"}),
        ("bob@example.com", {"globex": "admin"}),
    ]
    assert [u["email"] for u in cli.json("user", "list", "--org", "globex")["data"]] == [
        "bob@example.com"]  # fmt: skip


def test_org_delete_is_refused_while_credentials_live_unless_forced(cli: Cli) -> None:
    org = cli.org("acme")
    key = cli.key("acme")
    assert_refused(cli.run("org", "delete", "acme"), "1 live credential", "--force")
    assert cli.db_rows("SELECT id FROM api_keys") == [(key["id"],)]
    deleted = cli.json("org", "delete", "acme", "--force")
    assert (deleted["id"], deleted["deleted"], deleted["revoked"]) == (org["id"], True, 1)
    assert cli.db_rows("SELECT id FROM orgs") == []
    assert cli.db_rows("SELECT id FROM api_keys") == []
    assert (key["id"],) in cli.db_rows("SELECT credential_id FROM credential_events")
    empty = cli.org("empty")  # nothing live: no --force needed
    assert cli.json("org", "delete", "empty")["id"] == empty["id"]


@pytest.mark.parametrize("allowed", [False, True])
def test_client_create_takes_gateway_admin_only_when_the_config_allows_it(
    tmp_path: Path, upstream_url: str, allowed: bool
) -> None:
    raw = base_config(upstream_url, tmp_path / "gateway.db")
    raw["oauth"] = {"allow_admin_scope": allowed}
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    cli = Cli(write_config(tmp_path / "gateway.yaml", raw), tmp_path / "gateway.db", workdir)
    cli.org()
    args = ("client", "create", "--name", "ops", "--grant-type", "client_credentials",
            "--org", "acme", "--scopes", "gateway:admin")  # fmt: skip
    if allowed:
        assert cli.json(*args)["client_id"]
    else:
        assert_refused(cli.run(*args), "gateway:admin")


def test_user_set_password_and_disable(cli: Cli) -> None:
    cli.org()
    create = ("user", "create", "ada@example.com", "--org", "acme", "--password-stdin", "--json")
    first = run_gateway("--config", str(cli.config_path), *create, cwd=cli.workdir,
                        stdin="first password\n")  # fmt: skip
    assert first.returncode == 0, first.stderr
    change = ("user", "set-password", "ada@example.com", "--password-stdin", "--json")
    changed = run_gateway("--config", str(cli.config_path), *change, cwd=cli.workdir,
                          stdin="second password\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["email"] == "ada@example.com"
    disabled = cli.json("user", "disable", "ada@example.com")
    assert disabled["disabled_at"] is not None
    assert_refused(cli.run("user", "disable", "nobody@example.com"), "unknown user")
