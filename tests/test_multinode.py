"""Several ``gateway serve`` nodes sharing one PostgreSQL and one Redis, as real processes.

The module starts one upstream_example and two gateway nodes (A and B) on free
loopback ports, both pointed at a fresh PostgreSQL schema and a dedicated Redis
database, and mints an admin key and a reader key with the CLI. Tests that need
a broken dependency start a node of their own: C behind a PostgreSQL proxy the
test can pause, D and E pointed at a Redis nobody listens on, and a SQLite
gateway with ``--workers 2``.

Needs ``GATEWAY_TEST_POSTGRES_URL`` and ``GATEWAY_TEST_REDIS_URL``; without them
the shared-store tests are skipped, naming the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from cli_runner import cli_json
from conftest import free_port
from nodes import (
    Node,
    Reply,
    cli_key,
    merge,
    metric,
    node_config,
    outcomes,
    scrape,
    send,
    served_upstream,
    spread,
    write_node,
)
from redis.asyncio import Redis

from gateway.config import ADMIN_SCOPE

pytestmark = pytest.mark.asyncio(loop_scope="module")

POSTGRES_ENV = "GATEWAY_TEST_POSTGRES_URL"
REDIS_ENV = "GATEWAY_TEST_REDIS_URL"
REDIS_DB = 9  # this module's own database, flushed before and after
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=2)
PREFIX = "/_gateway/v1"
REVOCATION_DEADLINE = 1.0  # seconds: a revoked key is refused on every node within this
DB_TIMEOUT = 1.0  # node C's database.timeout
RECOVERY_DEADLINE = 5.0
T = TypeVar("T")


# --- where the shared services are ----------------------------------------------


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"multi-node tests need a shared store: {name} is not set")
    return value


def with_search_path(url: str, schema: str) -> str:
    """The same database, with every connection's search_path set to ``schema``."""
    parts = urlsplit(url)
    options = urlencode({"options": f"-csearch_path={schema}"})
    query = f"{parts.query}&{options}" if parts.query else options
    return urlunsplit(parts._replace(query=query))


def with_host_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


def with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One upstream_example process for the whole module."""
    async with served_upstream(tmp_path_factory.mktemp("upstream")) as url:
        yield url


# --- the cluster: nodes A and B on one schema and one Redis database ----------------


def shared_node(
    directory: Path,
    upstream_url: str,
    name: str,
    database_url: str,
    redis_url: str,
    **changes: Any,
) -> Node:
    config = node_config(upstream_url, free_port(), free_port())
    config["database"] = {"url": database_url}
    config["redis"] = {"url": redis_url}
    return write_node(directory, name, merge(config, changes))


@dataclass
class Cluster:
    directory: Path
    upstream_url: str
    postgres_url: str  # the server, as given by the environment
    database_url: str  # this module's schema on it
    redis_url: str
    a: Node
    b: Node
    admin_key: str
    reader_key: str

    def node(self, name: str, **changes: Any) -> Node:
        """A node like A and B (not started), with ``changes`` merged into its config."""
        return shared_node(
            self.directory, self.upstream_url, name, self.database_url, self.redis_url, **changes
        )

    def admin_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.admin_key}

    async def create_key(
        self, http: aiohttp.ClientSession, name: str, limits: dict[str, int] | None = None
    ) -> tuple[str, str]:
        """A ``contacts:read`` key made through node A's management API: (id, secret)."""
        body: dict[str, Any] = {"name": name, "scopes": ["contacts:read"]}
        if limits is not None:
            body["limits"] = limits
        async with http.post(
            f"{self.a.public}{PREFIX}/keys", json=body, headers=self.admin_headers()
        ) as response:
            created = await response.json()
            assert response.status == 201, created
        assert (limits or {}).items() <= created["limits"].items(), created
        return created["id"], created["key"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    postgres_url = required_env(POSTGRES_ENV)
    redis_url = with_redis_db(required_env(REDIS_ENV), REDIS_DB)
    directory = tmp_path_factory.mktemp("multinode")
    schema = f"gw_multinode_{secrets.token_hex(6)}"
    async with contextlib.AsyncExitStack() as cleanup:
        conn = await asyncpg.connect(postgres_url, timeout=5)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
        cleanup.push_async_callback(drop_schema, postgres_url, schema)
        redis = Redis.from_url(redis_url, socket_timeout=5)
        cleanup.push_async_callback(redis.aclose)
        await redis.flushdb()
        cleanup.push_async_callback(redis.flushdb)

        database_url = with_search_path(postgres_url, schema)
        a, b = (shared_node(directory, upstream_url, n, database_url, redis_url) for n in "AB")
        cleanup.callback(a.kill)
        cleanup.callback(b.kill)
        await asyncio.gather(a.start(), b.start())  # both migrate: one waits for the lock

        await cli_json(a.config_path, "org", "create", "acme")
        yield Cluster(
            directory=directory,
            upstream_url=upstream_url,
            postgres_url=postgres_url,
            database_url=database_url,
            redis_url=redis_url,
            a=a,
            b=b,
            admin_key=await cli_key(a.config_path, "admin", ADMIN_SCOPE),
            reader_key=await cli_key(a.config_path, "reader", "contacts:read"),
        )


async def drop_schema(postgres_url: str, schema: str) -> None:
    conn = await asyncpg.connect(postgres_url, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# --- talking to nodes ----------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        yield session


# --- 1, 2: keys and revocation across nodes ------------------------------------------


async def test_key_created_on_one_node_works_on_the_other(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    _, key = await cluster.create_key(http, "made on A")
    reply = await send(http, f"{cluster.b.public}/contacts", key)
    assert reply.status == 200, reply.body
    assert isinstance(reply.body["data"], list)


async def test_key_revoked_on_one_node_is_refused_by_the_other_within_a_second(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    key_id, key = await cluster.create_key(http, "revoked on A")
    on_b = f"{cluster.b.public}/contacts"
    for _ in range(2):  # the second one is answered from B's credential cache
        assert (await send(http, on_b, key)).status == 200

    deleted = await send(
        http, f"{cluster.a.public}{PREFIX}/keys/{key_id}", method="DELETE",
        headers=cluster.admin_headers(),
    )  # fmt: skip
    assert deleted.status == 204, deleted.body
    revoked_at = time.monotonic()
    while True:
        reply = await send(http, on_b, key)
        elapsed = time.monotonic() - revoked_at
        if reply.status == 401:
            break
        assert reply.status == 200, reply.body
        assert elapsed < 3 * REVOCATION_DEADLINE, "B still admits the revoked key"
        await asyncio.sleep(0.02)
    assert reply.error == "unauthorized", reply.body
    assert elapsed < REVOCATION_DEADLINE, f"B refused the revoked key only after {elapsed:.2f} s"


# --- 3, 4: limits counted across nodes ------------------------------------------------


async def test_quota_is_shared_by_the_nodes(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    _, key = await cluster.create_key(http, "quota", {"max_requests": 100})
    nodes = [cluster.a.public, cluster.b.public]
    urls = [f"{nodes[i % 2]}/contacts" for i in range(150)]
    replies = await spread(http, urls, key, concurrency=10)
    assert outcomes(replies) == {(200, None): 100, (429, "quota_exceeded"): 50}


def seconds_into_minute() -> int:
    return int(time.time()) % 60


async def within_one_minute(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` clear of a minute boundary; once more if it crossed one anyway."""
    for _ in range(2):
        while seconds_into_minute() >= 57:  # at most 3 s to the next minute
            await asyncio.sleep(0.1)
        minute = int(time.time()) // 60
        result = await attempt()
        if int(time.time()) // 60 == minute:
            return result
    raise AssertionError("two attempts in a row crossed a minute boundary")


async def test_rate_limit_is_shared_by_the_nodes(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    async def attempt() -> list[Reply]:
        _, key = await cluster.create_key(http, "rate", {"rate_limit": 20})
        nodes = [cluster.a.public, cluster.b.public]
        urls = [f"{nodes[i % 2]}/contacts" for i in range(30)]
        return await spread(http, urls, key, concurrency=5)

    replies = await within_one_minute(attempt)
    assert outcomes(replies) == {(200, None): 20, (429, "rate_limited"): 10}
    for reply in replies:
        if reply.status == 429:
            assert 1 <= int(reply.headers["Retry-After"]) <= 60, dict(reply.headers)
            assert reply.headers["RateLimit-Limit"] == "20"


# --- 5: PostgreSQL stops answering -----------------------------------------------------


class PausableProxy:
    """A loopback TCP proxy to PostgreSQL that can stop answering.

    Paused, it still accepts connections (the kernel completes the handshake) but
    forwards nothing in either direction and opens nothing upstream: to a client
    the database has gone silent, as behind a network partition. Bytes read while
    paused are held and delivered in order on resume, as TCP would once the
    partition heals.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        self.connections.add(this)
        self.writers.add(client_w)
        try:
            await self.flowing.wait()  # a new connection gets no answer while paused
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
            self.writers.add(server_w)
            async with asyncio.TaskGroup() as both_ways:  # one side failing ends the other
                both_ways.create_task(self.pump(client_r, server_w))
                both_ways.create_task(self.pump(server_r, client_w))
        except* OSError:
            pass  # a side reset its connection: that ends this one
        finally:
            self.connections.discard(this)
            client_w.close()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        connections = list(self.connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        for writer in self.writers:
            writer.close()


async def test_postgres_outage_is_a_503_and_recovers_without_restart(
    cluster: Cluster, http: aiohttp.ClientSession, spawned: list[Node]
) -> None:
    target = urlsplit(cluster.postgres_url)
    proxy = PausableProxy(target.hostname or "127.0.0.1", target.port or 5432)
    proxy_port = await proxy.start()
    try:
        c = cluster.node(
            "C",
            database={
                "url": with_host_port(cluster.database_url, "127.0.0.1", proxy_port),
                "timeout": DB_TIMEOUT,
            },
        )
        spawned.append(c)
        await c.start()
        on_c = f"{c.public}/contacts"
        assert (await send(http, on_c, cluster.reader_key)).status == 200
        _, fresh = await cluster.create_key(http, "never seen by C")

        proxy.pause()
        # One request finds the pooled connection gone silent, the others open new ones.
        replies = await asyncio.gather(*(send(http, on_c, fresh) for _ in range(3)))
        for reply in replies:
            assert (reply.status, reply.error) == (503, "service_unavailable"), reply.body
            assert reply.seconds < 3 * DB_TIMEOUT, f"a 503 took {reply.seconds:.2f} s"
        missing = await send(http, on_c)
        assert (missing.status, missing.error) == (401, "unauthorized"), missing.body
        garbage = await send(http, on_c, "not-a-key")
        assert (garbage.status, garbage.error) == (401, "unauthorized"), garbage.body

        proxy.resume()
        resumed = time.monotonic()
        while True:
            reply = await send(http, on_c, fresh)
            if reply.status == 200:
                break
            assert (reply.status, reply.error) == (503, "service_unavailable"), reply.body
            assert time.monotonic() - resumed < RECOVERY_DEADLINE, "C did not recover"
            await asyncio.sleep(0.1)
        assert await c.terminate() == 0, c.log()
    finally:
        await proxy.close()
    assert "Traceback" not in c.log(), c.log()


# --- 6: Redis unreachable ---------------------------------------------------------------


async def test_redis_outage_follows_on_failure(
    cluster: Cluster, http: aiohttp.ClientSession, spawned: list[Node]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    closed = cluster.node("D", redis={"url": dead})  # on_failure defaults to closed
    opened = cluster.node("E", redis={"url": dead, "on_failure": "open"})
    spawned += [closed, opened]
    await asyncio.gather(closed.start(), opened.start())
    name = "gateway_limit_backend_failures_total"

    refused = await send(http, f"{closed.public}/contacts", cluster.reader_key)
    assert (refused.status, refused.error) == (503, "service_unavailable"), refused.body
    assert refused.headers["Retry-After"] == "1"
    metrics = await scrape(http, closed.admin)
    assert metric(metrics, name, outcome="refused") == 1, metrics
    assert metric(metrics, name, outcome="admitted") == 0, metrics

    admitted = await send(http, f"{opened.public}/contacts", cluster.reader_key)
    assert admitted.status == 200, admitted.body
    metrics = await scrape(http, opened.admin)
    assert metric(metrics, name, outcome="admitted") == 1, metrics
    assert metric(metrics, name, outcome="refused") == 0, metrics


# --- 7: usage written at shutdown ---------------------------------------------------------


async def test_usage_counted_on_both_nodes_survives_a_clean_shutdown(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    on_a, on_b = 37, 23
    key_id, key = await cluster.create_key(http, "counted")
    urls = [f"{cluster.a.public}/contacts"] * on_a + [f"{cluster.b.public}/contacts"] * on_b
    replies = await spread(http, urls, key, concurrency=8)
    assert outcomes(replies) == {(200, None): on_a + on_b}

    codes = await asyncio.gather(cluster.a.terminate(), cluster.b.terminate())
    assert list(codes) == [0, 0], (cluster.a.log(), cluster.b.log())
    await asyncio.gather(cluster.a.start(), cluster.b.start())
    for node in (cluster.a, cluster.b):
        assert "Traceback" not in node.log(), node.log()

    headers = cluster.admin_headers()
    stats = await send(http, f"{cluster.a.public}{PREFIX}/stats?group_by=key", headers=headers)
    assert stats.status == 200, stats.body
    groups = {g["group"]: g for g in stats.body["groups"]}
    assert key_id in groups, stats.body
    assert (groups[key_id]["requests"], groups[key_id]["errors"]) == (on_a + on_b, 0)
    record = await send(http, f"{cluster.a.public}{PREFIX}/keys/{key_id}", headers=headers)
    assert record.status == 200, record.body
    assert record.body["requests"] == on_a + on_b, record.body


# --- 8: one node, several worker processes ------------------------------------------------
