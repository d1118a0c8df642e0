"""Live reload of a served node of two workers: SIGHUP and ``gateway reload`` re-read
config.yaml; routes, scopes and upstreams change without failing a request in
flight; a broken file or a setting that cannot change live is refused, and the old
config keeps serving."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from cli_runner import cli_json, run_cli
from conftest import Spawned, free_port
from nodes import Node, cli_key, metric, node_config, scrape, served_upstream, write_node

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    async with served_upstream(tmp_path_factory.mktemp("upstream")) as url:
        yield url


async def two_workers(tmp_path: Path, upstream_url: str, spawned: list[Spawned]) -> Node:
    config = node_config(upstream_url, free_port(), free_port())
    config["workers"] = 2
    config["database"] = {"url": f"sqlite:///{tmp_path / 'node.db'}"}
    node = write_node(tmp_path, "node", config, workers=2)
    spawned.append(node)
    await cli_json(node.config_path, "org", "create", "acme")
    await node.start()
    return node


def edit(node: Node, change: Any) -> None:
    config = yaml.safe_load(node.config_path.read_text())
    change(config)
    node.config_path.write_text(yaml.safe_dump(config))


async def config_hash(http: aiohttp.ClientSession, node: Node) -> str:
    async with http.get(f"{node.admin}/readyz") as resp:
        hashed: str = (await resp.json())["config"]
        return hashed


async def test_a_reload_switches_every_worker_without_failing_a_request(
    tmp_path: Path, upstream_url: str, spawned: list[Spawned]
) -> None:
    node = await two_workers(tmp_path, upstream_url, spawned)
    reader = {"X-API-Key": await cli_key(node.config_path, "reader", "contacts:read")}
    (tmp_path / "second").mkdir()
    fresh = aiohttp.TCPConnector(force_close=True)  # both workers, new connections
    async with (
        aiohttp.ClientSession(connector=fresh, timeout=TIMEOUT) as http,
        served_upstream(tmp_path / "second") as moved_to,
    ):
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                async with http.get(f"{node.public}/echo/load", headers=reader) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        loaders = [asyncio.create_task(load()) for _ in range(8)]
        await asyncio.sleep(0.3)
        before = await config_hash(http, node)

        def change(config: dict[str, Any]) -> None:
            added = {"path": "/added/**", "upstream": "main", "scopes": ["contacts:read"],
                     "strip_prefix": "/added"}  # fmt: skip
            config["routes"].insert(0, added)
            for route in config["routes"]:
                if route["path"] == "/contacts":
                    route["scopes"] = ["contacts:write"]
            config["upstreams"]["main"]["url"] = moved_to

        edit(node, change)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while await config_hash(http, node) == before:
            assert time.monotonic() < deadline, node.log()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*loaders)
        assert set(statuses) == {200} and sum(statuses.values()) > 50, statuses

        for _ in range(10):  # every worker has switched
            async with http.get(f"{node.public}/added/echo/x", headers=reader) as resp:
                assert resp.status == 200
                assert (await resp.json())["path"] == "/echo/x"
            async with http.get(f"{node.public}/contacts", headers=reader) as resp:
                assert resp.status == 403
        text = await scrape(http, node.admin)
        assert metric(text, "gateway_config_reloads_total", outcome="applied") == 1
    # The first upstream still runs; the requests now reach the second one, so after it
    # has stopped they fail with 502.
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.get(f"{node.public}/echo/x", headers=reader) as resp,
    ):
        assert resp.status == 502, await resp.text()
    assert await node.terminate() == 0, node.log()


async def test_gateway_reload_refuses_a_broken_file_or_a_fixed_setting(
    tmp_path: Path, upstream_url: str, spawned: list[Spawned]
) -> None:
    node = await two_workers(tmp_path, upstream_url, spawned)
    reader = {"X-API-Key": await cli_key(node.config_path, "reader", "contacts:read")}
    good = node.config_path.read_text()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        before = await config_hash(http, node)

        def unknown_scope(config: dict[str, Any]) -> None:
            config["routes"][0]["scopes"] = ["contacts:wrte"]

        edit(node, unknown_scope)
        refused = await run_cli(node.config_path, "reload")
        assert refused.returncode == 2
        assert "unknown scope 'contacts:wrte'" in refused.stderr

        node.config_path.write_text(good)

        def new_port(config: dict[str, Any]) -> None:
            config["listen"]["port"] = free_port()
            config["routes"].insert(0, {"path": "/added/**", "upstream": "main"})

        edit(node, new_port)
        refused = await run_cli(node.config_path, "reload")
        assert refused.returncode == 2
        assert "listen: cannot change while the node runs" in refused.stdout
        async with http.get(f"{node.public}/added/x", headers=reader) as resp:
            assert resp.status == 404  # the old config serves
        assert await config_hash(http, node) == before

        node.config_path.write_text(good)
        edit(node, lambda config: config["routes"].insert(
            0, {"path": "/added/**", "upstream": "main", "strip_prefix": "/added"}))  # fmt: skip
        applied = await run_cli(node.config_path, "reload", "--json")
        assert applied.returncode == 0, applied.stderr
        assert '"outcome": "applied"' in applied.stdout
        async with http.get(f"{node.public}/added/echo/x", headers=reader) as resp:
            assert resp.status == 200
        text = await scrape(http, node.admin)
        assert metric(text, "gateway_config_reloads_total", outcome="refused") == 1
        assert metric(text, "gateway_config_reloads_total", outcome="applied") == 1
        assert metric(text, "gateway_config_info") == 1
    assert await node.terminate() == 0, node.log()
