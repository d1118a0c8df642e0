"""One node is one gateway: a served gateway with ``workers: 2``, SQLite and no Redis,
whose workers share revocations, limits, the login throttle, metrics and one admin
port, under a supervisor that replaces a worker that dies.

The credential cache is given a long life and a slow poll here (``SLOW_POLL``), so
that what makes a revocation hold at once is the node's shared memory, not the
database poll.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cli_runner import cli_json, run_cli
from conftest import Spawned, free_port
from nodes import (
    Node,
    cli_key,
    command_line,
    descendants,
    metric,
    node_config,
    running,
    scrape,
    served_upstream,
    write_node,
)
from processes import wait_until_answers

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW_POLL = 30.0  # seconds: longer than any test here
AT_ONCE = 20  # fresh connections opened together right after a revoking call returns
PREFIX = "/_gateway/v1"
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with served_upstream(tmp_path_factory.mktemp("upstream")) as url:
        yield url


@pytest.fixture
def http() -> Iterator[Callable[[], aiohttp.ClientSession]]:
    """Sessions that open a fresh connection for every request, so that the kernel
    spreads them over both workers."""
    yield lambda: aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0), timeout=TIMEOUT
    )


@pytest.fixture
async def node(tmp_path: Path, upstream_url: str, spawned: list[Spawned]) -> Node:
    """A node of two workers on SQLite, no Redis, serving org acme."""
    config = node_config(upstream_url, free_port(), free_port())
    config["workers"] = 2
    config["database"] = {"url": f"sqlite:///{tmp_path / 'node.db'}"}
    config["cache"] = {"credential_ttl": 600, "poll_interval": SLOW_POLL}
    config["management"] = {"rotation_grace": 0}
    config["routes"].append({"path": "/ws/**", "upstream": "main", "websocket": True,
                             "scopes": ["contacts:read"]})  # fmt: skip
    node = write_node(tmp_path, "node", config, workers=2)
    spawned.append(node)
    await cli_json(node.config_path, "org", "create", "acme")
    await node.start()
    return node


@pytest.fixture
async def admin(node: Node) -> dict[str, str]:
    return {"X-API-Key": await cli_key(node.config_path, "admin", "gateway:admin")}


@pytest.fixture
async def reader(node: Node) -> dict[str, str]:
    return {"X-API-Key": await cli_key(node.config_path, "reader", "contacts:read")}


async def statuses(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int
) -> Counter[int]:
    """``n`` requests at once, each on its own connection: their statuses."""

    async def one() -> int:
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status

    return Counter(await asyncio.gather(*(one() for _ in range(n))))


async def warm(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    """Enough requests that both workers have verified (and cached) the credential."""
    assert await statuses(session, url, headers, AT_ONCE) == {200: AT_ONCE}


# --- revocation ---------------------------------------------------------------------


async def test_a_revocation_closes_the_key_s_websockets_on_every_worker(
    node: Node, http: Callable[[], aiohttp.ClientSession]
) -> None:
    created = await cli_json(node.config_path, "key", "create", "--org", "acme",
                             "--name", "sockets", "--scopes", "contacts:read")  # fmt: skip
    headers = {"X-API-Key": created["key"]}
    url = node.public.replace("http://", "ws://") + "/ws/echo"
    async with http() as session:
        sockets = [await session.ws_connect(url, headers=headers) for _ in range(8)]
        for ws in sockets:
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert dict(hello["headers"])["X-Credential-Id"] == created["id"]
        text = await scrape(session, node.admin)
        assert metric(text, "gateway_websockets_open") == 8
        assert (await run_cli(node.config_path, "key", "revoke", created["id"])).returncode == 0
        returned = time.monotonic()
        closes = [await ws.receive(timeout=3) for ws in sockets]
        assert {(m.type, m.data) for m in closes} == {(aiohttp.WSMsgType.CLOSE, 4401)}
        assert time.monotonic() - returned < 1.0
        for _ in range(40):
            if metric(await scrape(session, node.admin), "gateway_websockets_open") == 0:
                break
            await asyncio.sleep(0.05)
        assert metric(await scrape(session, node.admin), "gateway_websockets_open") == 0


async def test_a_revocation_holds_on_every_worker_the_moment_it_returns(
    node: Node, admin: dict[str, str], http: Callable[[], aiohttp.ClientSession]
) -> None:
    contacts = f"{node.public}/contacts"
    async with http() as session:

        async def new_key(name: str) -> tuple[str, dict[str, str]]:
            body = {"name": name, "scopes": ["contacts:read"]}
            async with session.post(
                f"{node.public}{PREFIX}/keys", headers=admin, json=body
            ) as resp:
                created = await resp.json()
                assert resp.status == 201, created
            headers = {"X-API-Key": created["key"]}
            await warm(session, contacts, headers)
            return created["id"], headers

        async def call(method: str, path: str, **kwargs: Any) -> None:
            async with session.request(method, f"{node.public}{PREFIX}{path}", headers=admin,
                                       **kwargs) as resp:  # fmt: skip
                assert resp.status in (200, 204), await resp.text()

        revocations: dict[str, Callable[[str], Any]] = {
            "deleted": lambda key_id: call("DELETE", f"/keys/{key_id}"),
            "rotated": lambda key_id: call("POST", f"/keys/{key_id}/rotate"),  # no grace here
            "narrowed": lambda key_id: call(
                "PATCH", f"/keys/{key_id}", json={"scopes": ["products:read"]}
            ),
            "revoked with the CLI": lambda key_id: run_cli(
                node.config_path, "key", "revoke", key_id
            ),
        }  # fmt: skip
        for how, revoke in revocations.items():
            key_id, headers = await new_key(how)
            await revoke(key_id)
            after = await statuses(session, contacts, headers, AT_ONCE)
            refused = 403 if how == "narrowed" else 401
            assert after == {refused: AT_ONCE}, f"{how}: {after}"

        # Access tokens: one revoked at the revocation endpoint (RFC 7009), one whose
        # client is deleted.
        async def new_token() -> tuple[str, str, dict[str, str], dict[str, str]]:
            client = await cli_json(node.config_path, "client", "create", "--name", "svc",
                                    "--scopes", "contacts:read", "--grant-type",
                                    "client_credentials", "--org", "acme")  # fmt: skip
            basic = {
                "Authorization": aiohttp.encode_basic_auth(
                    client["client_id"], client["client_secret"]
                )
            }
            async with session.post(f"{node.public}/oauth/token", headers=basic,
                                    data={"grant_type": "client_credentials"}) as resp:  # fmt: skip
                token = (await resp.json())["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            await warm(session, contacts, bearer)
            return token, client["client_id"], basic, bearer

        token, _, basic, bearer = await new_token()
        async with session.post(f"{node.public}/oauth/revoke", headers=basic,
                                data={"token": token}) as resp:  # fmt: skip
            assert resp.status == 200
        assert await statuses(session, contacts, bearer, AT_ONCE) == {401: AT_ONCE}
        token, client_id, basic, bearer = await new_token()
        await call("DELETE", f"/clients/{client_id}")
        assert await statuses(session, contacts, bearer, AT_ONCE) == {401: AT_ONCE}


# --- limits -------------------------------------------------------------------------


def seconds_into_minute() -> float:
    return time.time() % 60


async def within_one_minute() -> None:
    """Rate limits count in fixed minutes: start early in one."""
    if seconds_into_minute() > 45:
        await asyncio.sleep(61 - seconds_into_minute())


async def test_limits_count_once_for_the_node_whichever_worker_serves(
    node: Node, admin: dict[str, str], http: Callable[[], aiohttp.ClientSession]
) -> None:
    contacts = f"{node.public}/contacts"
    async with http() as session:

        async def limited(limits: dict[str, int]) -> dict[str, str]:
            async with session.post(f"{node.public}{PREFIX}/keys", headers=admin, json={
                "name": "limited", "scopes": ["contacts:read"], "limits": limits,
            }) as resp:  # fmt: skip
                created = await resp.json()
                assert resp.status == 201, created
            return {"X-API-Key": created["key"]}

        await within_one_minute()
        rate = await limited({"rate_limit": 30})
        assert await statuses(session, contacts, rate, 80) == {200: 30, 429: 50}
        quota = await limited({"max_requests": 25})
        assert await statuses(session, contacts, quota, 75) == {200: 25, 429: 50}

        # The login throttle: 5 failed passwords per account, through the legacy
        # auth_string, whichever worker checks them.
        client = await cli_json(
            node.config_path, "client", "create", "--name", "legacy", "--scopes",
            "contacts:read", "--grant-type", "client_credentials", "--org", "acme",
            "--allow-user-auth",
        )  # fmt: skip
        await run_cli(node.config_path, "user", "create", "ada@example.com", "--org", "acme")
        basic = {
            "Authorization": aiohttp.encode_basic_auth(client["client_id"], client["client_secret"])
        }
        guess = base64.b64encode(b"ada@example.com:wrong password").decode()

        async def attempt() -> int:
            async with session.post(f"{node.public}/oauth/token", headers=basic, data={
                "grant_type": "client_credentials", "auth_string": guess,
            }) as resp:  # fmt: skip
                return resp.status

        outcome = Counter(await asyncio.gather(*(attempt() for _ in range(16))))
        assert outcome == {400: 5, 429: 11}, outcome


# --- one admin listener ----------------------------------------------------------------


def listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports that these processes listen on (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir() if fds.exists() else ():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_the_node_has_one_admin_listener_with_the_node_s_totals(
    node: Node, reader: dict[str, str], http: Callable[[], aiohttp.ClientSession]
) -> None:

    assert node.proc is not None
    processes = {node.proc.pid, *descendants(node.proc.pid)}
    public_port = int(node.public.rsplit(":", 1)[1])
    admin_port = int(node.admin.rsplit(":", 1)[1])
    assert listening_ports(processes) == {public_port, admin_port}
    for pid in processes - {node.proc.pid}:
        assert listening_ports({pid}) <= {public_port}, command_line(pid)

    async with http() as session:
        assert await statuses(session, f"{node.public}/contacts", reader, 60) == {200: 60}
        text = await scrape(session, node.admin)
        assert metric(text, "gateway_requests_total", route="/contacts") == 60
        count = metric(text, "gateway_overhead_seconds_count", route="/contacts")
        assert count == 60
        async with session.get(f"{node.admin}/healthz") as resp:
            assert await resp.json() == {"status": "ok", "workers": {"up": 2, "configured": 2}}
        async with session.get(f"{node.admin}/readyz") as resp:
            assert resp.status == 200


# --- supervision ---------------------------------------------------------------------


def workers_of(node: Node) -> set[int]:
    assert node.proc is not None
    return {pid for pid in descendants(node.proc.pid) if "spawn_main" in command_line(pid)}


async def test_a_worker_killed_is_replaced_and_the_node_keeps_serving(
    node: Node, reader: dict[str, str], http: Callable[[], aiohttp.ClientSession]
) -> None:

    before = workers_of(node)
    assert len(before) == 2
    async with http() as session:
        assert await statuses(session, f"{node.public}/contacts", reader, 20) == {200: 20}
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.sleep(0.05)
        # The other worker serves meanwhile.
        assert await statuses(session, f"{node.public}/contacts", reader, 20) == {200: 20}
        while True:
            async with session.get(f"{node.admin}/healthz") as resp:
                health = await resp.json()
            if health["workers"]["up"] == 2:
                break
            assert time.monotonic() - killed_at < 2.0, health
            await asyncio.sleep(0.05)
        after = workers_of(node)
        assert len(after) == 2 and victim not in after
        assert await statuses(session, f"{node.public}/contacts", reader, 20) == {200: 20}
        text = await scrape(session, node.admin)
        # What the dead worker had counted before it was last asked stays counted.
        assert metric(text, "gateway_requests_total", route="/contacts") >= 40
    assert await node.terminate() == 0, node.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_drains_every_worker_and_exits_0(
    node: Node,
    reader: dict[str, str],
    http: Callable[[], aiohttp.ClientSession],
    sig: signal.Signals,
) -> None:

    workers = workers_of(node)
    assert node.proc is not None
    async with http() as session:

        async def slow() -> int:
            # The upstream answers after 0.45 s (its timeout is 0.5 s).
            async with session.get(f"{node.public}/slow?delay=0.45", headers=reader) as resp:
                await resp.read()
                return resp.status

        in_flight = [asyncio.create_task(slow()) for _ in range(6)]
        await asyncio.sleep(0.15)
        node.proc.send_signal(sig)
        assert [await task for task in in_flight] == [200] * 6
    assert await node.terminate() == 0, node.log()
    assert not [pid for pid in workers if running(pid)]


async def test_a_worker_that_cannot_listen_stops_the_node_with_status_1(
    tmp_path: Path, upstream_url: str, spawned: list[Spawned]
) -> None:
    """The public port held by another program: a start-up failure, not a crash loop."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = node_config(upstream_url, port, free_port())
        config["database"] = {"url": f"sqlite:///{tmp_path / 'node.db'}"}
        node = write_node(tmp_path, "node", config, workers=2)
        spawned.append(node)
        proc = node.spawn()
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.returncode == 1, node.log()
        assert "cannot listen" in node.log()
        with pytest.raises(AssertionError):
            await wait_until_answers(f"{node.admin}/healthz", proc, node.log_path)
