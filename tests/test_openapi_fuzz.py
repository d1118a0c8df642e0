"""Schemathesis against a served gateway: the management API keeps its OpenAPI promise.

The module-scoped ``fuzz_gateway`` fixture starts ``upstream_example`` and
``gateway serve`` as processes on free loopback ports, mints a ``gateway:admin``
key with the CLI, and tears both down. The schema is loaded from the running
gateway's ``/_gateway/v1/openapi.json``; every operation in it is fuzzed twice,
once with data that fits the schema and once with data that does not. Each
response must not be a 5xx, and its status, content type and body must be the
ones the document declares.

Checks: not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance. Generation is derandomized (repeatable) and bounded
by MAX_EXAMPLES per operation and phase. The negative pass covers the operations
that have a body or a query to break; a lone string path parameter has no
out-of-schema value, and schemathesis refuses to run such an operation negatively.

Random identifiers only ever reach the 404 branch, so three cases in four aimed
at ``/keys/{key_id}``, ``/clients/{client_id}`` and ``/grants/{grant_id}`` are
pointed at a live resource created for that case (a key, a confidential client,
a revived grant); the rest keep the generated value.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import schemathesis
import yaml
from conftest import REDIRECT_URI, base_config, free_port
from processes import clean_env, stop
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.filters import HasAPIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from gateway import crypto
from gateway.config import Management, load_config
from gateway.manage import OPERATIONS
from gateway.store import Store, open_store

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0
HTTP_TIMEOUT = 10.0
MAX_EXAMPLES = 40
PREFIX = Management().prefix
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PASSWORD = "fuzz horse battery staple"


def wait_until_answers(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until it answers 200; fail fast if ``proc`` exits; bounded in time."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {START_TIMEOUT} s")
        time.sleep(0.1)


def cli_json(config_path: Path, *args: str, stdin: str | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), *args, "--json"],
        cwd=config_path.parent,
        env=clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def manage_post(public: str, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A management call that must create something (setup, not under test)."""
    request = urllib.request.Request(
        f"{public}{PREFIX}{path}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        assert response.status == 201, response.status
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


@dataclass
class FuzzGateway:
    """A served gateway, an admin key for it, and live resources to aim cases at."""

    public: str
    key: str
    org_id: str
    user_id: str
    grant_client_id: str
    loop: asyncio.AbstractEventLoop
    store: Store  # the gateway's database, opened from this process

    @property
    def openapi_url(self) -> str:
        return f"{self.public}{PREFIX}/openapi.json"

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def live_key(self) -> str:
        body = {"name": "fuzz target", "scopes": ["contacts:read"]}
        return str(manage_post(self.public, self.key, "/keys", body)["id"])

    def live_client(self) -> str:
        body = {"name": "fuzz target", "redirect_uris": [REDIRECT_URI], "scopes": ["contacts:read"]}
        return str(manage_post(self.public, self.key, "/clients", body)["client_id"])

    def live_grant(self) -> str:
        """The one grant of (user, org, client): created, or un-revoked if a case revoked it."""
        upsert = self.store.upsert_grant(
            crypto.new_id("grant"),
            self.user_id,
            self.org_id,
            self.grant_client_id,
            ("contacts:read",),
            time.time(),
        )
        return self.loop.run_until_complete(upsert)


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzGateway]:
    tmp = tmp_path_factory.mktemp("fuzz")
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    loop = asyncio.new_event_loop()
    store: Store | None = None
    try:
        upstream_log = (tmp / "upstream.log").open("wb")
        gateway_log = (tmp / "gateway.stderr").open("wb")
        logs += [upstream_log, gateway_log]

        upstream_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "upstream_example", "--port", str(upstream_port)],
            cwd=tmp,
            env=clean_env(),
            stdout=upstream_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(upstream)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        wait_until_answers(f"{upstream_url}/status", upstream, tmp / "upstream.log")

        config = base_config(upstream_url, tmp / "gateway.db")
        public_port, admin_port = free_port(), free_port()
        public = f"http://127.0.0.1:{public_port}"
        config["listen"]["port"] = public_port
        config["admin"]["port"] = admin_port
        config["public_url"] = public  # the document's `servers`
        # Thousands of requests from one key in a minute: the fuzzer must not be rate limited.
        config["limits"] = {"per_credential": 1_000_000, "per_org": 1_000_000}
        config_path = tmp / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config_path), "serve"],
            cwd=tmp,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=gateway_log,  # tracebacks of any 5xx land here
        )
        procs.append(gateway)
        admin = f"http://127.0.0.1:{admin_port}"
        wait_until_answers(f"{admin}/healthz", gateway, tmp / "gateway.stderr")

        org = cli_json(config_path, "org", "create", "acme")
        key = cli_json(
            config_path,
            "key", "create", "--org", "acme", "--name", "fuzz", "--scopes", "gateway:admin",
        )  # fmt: skip
        user = cli_json(
            config_path,
            "user", "create", "fuzz@example.com", "--org", "acme", "--role", "admin",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        for amount in ("1000", "250"):  # so /wallet/transactions has rows (and a second page)
            cli_json(config_path, "wallet", "credit", "acme", amount, "--note", "fuzz")

        store = open_store(load_config(config_path))
        loop.run_until_complete(store.connect())
        served = FuzzGateway(
            public=public,
            key=key["key"],
            org_id=org["id"],
            user_id=user["id"],
            grant_client_id=manage_post(
                public,
                key["key"],
                "/clients",
                {"name": "connected", "redirect_uris": [REDIRECT_URI], "scopes": ["contacts:read"]},
            )["client_id"],
            loop=loop,
            store=store,
        )
        served.live_grant()  # so GET /grants has a row to describe
        yield served
    finally:
        if store is not None:
            loop.run_until_complete(store.close())
        loop.close()
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()


def load_schema(served: FuzzGateway, mode: GenerationMode) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(
        served.openapi_url, config=schemathesis.Config(), timeout=HTTP_TIMEOUT
    )
    # Every request carries the admin key; no made-up credentials next to it (one
    # credential per request, or the gateway answers 400 before the handler runs).
    schema.config.update(base_url=served.public, headers=served.headers())
    schema.config.generation.update(
        modes=[mode],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        with_security_parameters=False,
    )
    return schema


@pytest.fixture(scope="module")
def positive_schema(fuzz_gateway: FuzzGateway) -> OpenApiSchema:
    return load_schema(fuzz_gateway, GenerationMode.POSITIVE)


@pytest.fixture(scope="module")
def negative_schema(fuzz_gateway: FuzzGateway) -> OpenApiSchema:
    return load_schema(fuzz_gateway, GenerationMode.NEGATIVE)


@pytest.fixture(autouse=True)
def _nodeid_for_lazy_schemas(request: pytest.FixtureRequest) -> None:
    """Let ``schemathesis.pytest.from_fixture`` run under pytest 9.2.

    schemathesis 4.32's lazy loader reads and rewrites ``item._nodeid`` (to label each
    operation's subtest); pytest 9.2 keeps the id in ``item._id`` and has no ``_nodeid``, so
    the test dies with AttributeError before any request. Give it the attribute it reads;
    harmless once schemathesis stops touching it.
    """
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid


positive = schemathesis.pytest.from_fixture("positive_schema")


def has_data_to_negate(ctx: HasAPIOperation) -> bool:
    """A body or a query: a lone string path parameter has no value outside its schema.

    Filters see the operation before its parameters are built: read its definition.
    """
    definition: dict[str, Any] = ctx.operation.definition.raw
    parameters: list[dict[str, Any]] = definition.get("parameters", [])
    return "requestBody" in definition or any(p["in"] == "query" for p in parameters)


negative = schemathesis.pytest.from_fixture("negative_schema").include(has_data_to_negate)

LIVE = {
    "key_id": FuzzGateway.live_key,
    "client_id": FuzzGateway.live_client,
    "grant_id": FuzzGateway.live_grant,
}


def aim_at_live_resource(case: Case[Any], served: FuzzGateway) -> None:
    """Point three cases in four at a resource that exists (repeatably chosen)."""
    for name, make in LIVE.items():
        value = case.path_parameters.get(name)
        if value is not None and zlib.crc32(str(value).encode()) % 4:
            case.path_parameters[name] = make(served)


def exercise(case: Case[Any], served: FuzzGateway) -> None:
    aim_at_live_resource(case, served)
    case.call_and_validate(checks=CHECKS, timeout=HTTP_TIMEOUT)


@positive.parametrize()
def test_management_api_conforms_with_valid_data(
    case: Case[Any], fuzz_gateway: FuzzGateway
) -> None:
    exercise(case, fuzz_gateway)


@negative.parametrize()
def test_management_api_conforms_with_invalid_data(
    case: Case[Any], fuzz_gateway: FuzzGateway
) -> None:
    exercise(case, fuzz_gateway)


def test_openapi_document_is_valid_3_1(fuzz_gateway: FuzzGateway) -> None:
    schema = schemathesis.openapi.from_url(
        fuzz_gateway.openapi_url, config=schemathesis.Config(), timeout=HTTP_TIMEOUT
    )
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    raw = schema.raw_schema
    assert raw["openapi"] == "3.1.0"
    assert raw["servers"] == [{"url": fuzz_gateway.public}]
    documented = {(method.upper(), path) for path, item in raw["paths"].items() for method in item}
    served = {(op.method, PREFIX + op.path) for op in OPERATIONS}
    assert served <= documented, served - documented
    assert documented == served
