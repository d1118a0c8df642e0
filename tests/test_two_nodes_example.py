"""The README's "two nodes and nginx on one machine", run as written: its shell lines
with the project's own ``config.yaml`` (``workers: auto``), and its nginx block in
an nginx of our own, in front of an upstream_example on the config's port.

The example's ports are fixed (8080, 8081, 8082, 9091, 9092, and 9001 for the
upstream): the test fails, naming the port, if one of them is taken.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nodes import ROOT, Example, metric, readme_block
from processes import clean_env, wait_until_answers

PORTS = (8080, 8081, 8082, 9091, 9092, 9001)
AFTER = "Two nodes and nginx on one machine"


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[Example]:
    """The example running in a copy of the project's config folder."""
    example = Example(tmp_path, PORTS)
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    try:
        example.start([sys.executable, "-m", "upstream_example", "--port", "9001"], env)
        nodes = []
        for line in readme_block(AFTER, "sh").splitlines():
            if line.strip():
                assert line.endswith("&"), line
                nodes.append(example.start(["sh", "-c", line.rstrip("& ")], env))
        example.start_nginx(readme_block(AFTER, "nginx"))
        for admin, node in zip((9091, 9092), nodes, strict=True):
            await wait_until_answers(f"http://127.0.0.1:{admin}/healthz", node, example.log_path)
        yield example
    finally:
        example.close()


async def test_the_readme_two_node_example_works_as_written(example: Example) -> None:
    fresh = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=fresh, timeout=timeout) as http:
        for _ in range(100):  # nginx may still be starting
            try:
                async with http.get("http://127.0.0.1:8080/status") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        for _ in range(40):
            async with http.get("http://127.0.0.1:8080/status") as resp:
                assert resp.status == 200
                assert (await resp.json())["service"] == "upstream_example"
        served = []
        for admin in (9091, 9092):
            async with http.get(f"http://127.0.0.1:{admin}/healthz") as resp:
                health = await resp.json()
            assert health["status"] == "ok" and health["workers"]["up"] >= 1, health
            async with http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
                served.append(metric(await resp.text(), "gateway_requests_total", route="/status"))
    assert sum(served) >= 40 and all(n > 0 for n in served), served
