"""A served gateway killed with SIGKILL (supervisor and workers at once) in the
middle of key creations, token grants and paid calls, then started again: what it
answered with success is all there, and no wallet debit stands without its call.

The upstream is this test's own server, so that it can say which paid calls
reached it (by the ``X-Request-Id`` the gateway sends), and it answers each after
a short pause, so that the kill finds calls in flight.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cli_runner import cli_json
from conftest import AiohttpServer, Spawned, free_port
from nodes import cli_key, descendants, node_config, running, write_node

PREFIX = "/_gateway/v1"
LOAD_SECONDS = 1.5
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=2)


@pytest.fixture
async def recording_upstream(aiohttp_server: AiohttpServer) -> tuple[str, set[str]]:
    """An upstream that notes the request id of every call it receives."""
    reached: set[str] = set()

    async def answer(request: web.Request) -> web.Response:
        reached.add(request.headers["X-Request-Id"])
        await asyncio.sleep(random.uniform(0.0, 0.05))
        return web.json_response({"imported": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}", reached


async def test_after_a_sigkill_every_answered_write_is_there_and_no_debit_lacks_its_call(
    tmp_path: Path, recording_upstream: tuple[str, set[str]], spawned: list[Spawned]
) -> None:
    upstream_url, reached = recording_upstream
    config = node_config(upstream_url, free_port(), free_port())
    config["workers"] = 2
    db_path = tmp_path / "crash.db"
    config["database"] = {"url": f"sqlite:///{db_path}"}
    config["routes"].insert(0, {"path": "/paid/**", "upstream": "main", "cost": 1,
                                "scopes": ["contacts:read"], "strip_prefix": "/paid"})  # fmt: skip
    node = write_node(tmp_path, "node", config, workers=2)
    spawned.append(node)
    await cli_json(node.config_path, "org", "create", "acme")
    await cli_json(node.config_path, "wallet", "credit", "acme", "1000000")
    admin = {"X-API-Key": await cli_key(node.config_path, "admin", "gateway:admin")}
    payer = {"X-API-Key": await cli_key(node.config_path, "payer", "contacts:read")}
    client = await cli_json(
        node.config_path, "client", "create", "--name", "svc", "--scopes", "contacts:read",
        "--grant-type", "client_credentials", "--org", "acme",
    )  # fmt: skip
    basic = {
        "Authorization": aiohttp.encode_basic_auth(client["client_id"], client["client_secret"])
    }
    await node.start()

    keys: list[str] = []  # ids of keys whose creation was answered 201
    tokens: list[str] = []  # access tokens whose grant was answered 200
    paid: list[str] = []  # request ids of paid calls answered 200
    loop_until = time.monotonic() + LOAD_SECONDS

    async def keep(work: Any) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            while time.monotonic() < loop_until + 5:
                try:
                    await work(session)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    return  # the gateway is gone

    async def create_key(session: aiohttp.ClientSession) -> None:
        body = {"name": "crash", "scopes": ["contacts:read"]}
        async with session.post(f"{node.public}{PREFIX}/keys", headers=admin, json=body) as resp:
            if resp.status == 201:
                keys.append((await resp.json())["id"])

    async def grant(session: aiohttp.ClientSession) -> None:
        form = {"grant_type": "client_credentials"}
        async with session.post(f"{node.public}/oauth/token", headers=basic, data=form) as resp:
            if resp.status == 200:
                tokens.append((await resp.json())["access_token"])

    async def pay(session: aiohttp.ClientSession) -> None:
        async with session.post(f"{node.public}/paid/import", headers=payer, data=b"a,b") as resp:
            await resp.read()
            if resp.status == 200:
                paid.append(resp.headers["X-Request-Id"])

    load = [asyncio.create_task(keep(w)) for w in (create_key, grant, *[pay] * 6)]
    await asyncio.sleep(LOAD_SECONDS)
    assert node.proc is not None
    doomed = [node.proc.pid, *descendants(node.proc.pid)]
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)
    await asyncio.gather(*load)
    node.proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    while [pid for pid in doomed if running(pid)]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert keys and tokens and paid, (len(keys), len(tokens), len(paid))

    await node.start()  # the same config, database and ports
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for key_id in keys:
            async with session.get(f"{node.public}{PREFIX}/keys/{key_id}", headers=admin) as resp:
                assert resp.status == 200, key_id
        for token in tokens:
            bearer = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{node.public}/contacts", headers=bearer) as resp:
                assert resp.status == 200, token

    with sqlite3.connect(db_path) as db:
        debits = dict(db.execute(
            "SELECT request_id, settled FROM wallet_transactions WHERE kind = 'debit'"
        ).fetchall())  # fmt: skip
        refunded = {r for (r,) in db.execute(
            "SELECT request_id FROM wallet_transactions WHERE kind = 'refund'"
        )}  # fmt: skip
        [(balance,)] = db.execute("SELECT balance FROM wallets").fetchall()
        [(total,)] = db.execute("SELECT SUM(amount) FROM wallet_transactions").fetchall()
    assert set(paid) <= set(debits), "a paid call answered 200 has no debit"
    assert 0 not in debits.values(), "a debit was left pending after the restart"
    standing = {r for r in debits if r not in refunded}
    assert standing <= reached, f"debits without their call: {standing - reached}"
    assert balance == total  # the ledger adds up
