"""The README's "two nodes and nginx on one machine", run as written: its shell lines
with the project's own ``config.yaml`` (``workers: auto``), and its nginx block in
an nginx of our own, in front of an upstream_example on the config's port.

The example's ports are fixed (8080, 8081, 8082, 9091, 9092, and 9001 for the
upstream): the test fails, naming the port, if one of them is taken.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nodes import descendants, metric, running
from processes import clean_env, stop, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent
PORTS = (8080, 8081, 8082, 9091, 9092, 9001)


def readme_example() -> tuple[list[str], str]:
    """The shell lines and the nginx block that follow "Two nodes and nginx"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Two nodes and nginx on one machine") :]
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    nginx = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert shell is not None and nginx is not None
    return [line for line in shell.group(1).splitlines() if line.strip()], nginx.group(1)


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.skip("SKIP the two-node example: nginx is not installed")
    return found


def assert_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            pytest.fail(f"port {port}, which the README's example uses, is taken")


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """The example running in a copy of the project's config folder."""
    nginx = nginx_binary()
    for port in PORTS:
        assert_free(port)
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    lines, server_block = readme_example()
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    log = (tmp_path / "example.log").open("ab")
    procs = [subprocess.Popen([sys.executable, "-m", "upstream_example", "--port", "9001"],
                              cwd=tmp_path, env=env, stdout=log, stderr=log)]  # fmt: skip
    try:
        for line in lines:
            assert line.endswith("&"), line
            command = ["sh", "-c", line.rstrip("& ")]
            procs.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log))
        (tmp_path / "nginx").mkdir()
        conf = tmp_path / "nginx" / "nginx.conf"
        conf.write_text(
            "daemon off; pid nginx.pid; error_log stderr warn;\n"
            "events { worker_connections 256; }\n"
            "http { access_log off; client_body_temp_path tmp; proxy_temp_path tmp;\n"
            f"{server_block}}}\n"
        )
        (tmp_path / "nginx" / "tmp").mkdir()
        procs.append(subprocess.Popen([nginx, "-p", str(tmp_path / "nginx"), "-c", str(conf)],
                                      stdout=log, stderr=log))  # fmt: skip
        for admin in (9091, 9092):
            await wait_until_answers(
                f"http://127.0.0.1:{admin}/healthz", procs[1], tmp_path / "example.log"
            )
        yield procs
    finally:
        for proc in reversed(procs):
            below = descendants(proc.pid)
            stop(proc)
            for pid in below:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
        log.close()


async def test_the_readme_two_node_example_works_as_written(
    example: list[subprocess.Popen[bytes]],
) -> None:
    fresh = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=fresh, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:
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
