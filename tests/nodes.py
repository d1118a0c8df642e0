"""Gateway nodes as real processes in tests: a ``gateway serve`` node and its
config, its processes and their listening sockets, an upstream_example process,
and the small client calls that tests make to nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cli_runner import cli_json
from conftest import base_config, free_port
from multidict import CIMultiDictProxy
from processes import clean_env, stop, wait_until_answers
from prometheus_client.parser import text_string_to_metric_families

STOP_TIMEOUT = 15.0


# --- processes --------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        pending.append(int(child))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Node:
    """One ``gateway serve`` process (maybe a supervisor of workers) and its config."""

    name: str
    config_path: Path
    log_path: Path
    public: str
    admin: str
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "gateway", "--config", str(self.config_path), "serve"]
        return [*argv, "--workers", str(self.workers)] if self.workers > 1 else argv

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=self.config_path.parent,
                env=clean_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self.proc

    async def start(self) -> None:
        """Spawn and wait (bounded) until the admin listener answers /healthz."""
        proc = self.spawn()
        await wait_until_answers(f"{self.admin}/healthz", proc, self.log_path)

    async def terminate(self) -> int:
        """SIGTERM and wait (bounded, without blocking the loop) for the exit code."""
        proc = self.proc
        assert proc is not None, f"node {self.name} was never started"
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
                raise AssertionError(f"node {self.name}: no exit within {STOP_TIMEOUT} s")
            await asyncio.sleep(0.05)
        return proc.returncode

    def kill(self) -> None:
        """Teardown: SIGTERM, then SIGKILL after a grace period, workers included."""
        if self.proc is None:
            return
        below = descendants(self.proc.pid)
        stop(self.proc)
        for pid in below:
            if running(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def node_config(upstream_url: str, public_port: int, admin_port: int) -> dict[str, Any]:
    config = base_config(upstream_url, Path("unused.db"))
    config["workers"] = 1  # one process per node; exact per-node metrics, one admin port
    config["listen"]["port"] = public_port
    config["admin"]["port"] = admin_port
    config["cache"] = {"credential_ttl": 30, "poll_interval": 0.2}
    config["usage"] = {"flush_interval": 3600}  # only the shutdown flush writes usage
    config["logging"] = {"level": "WARNING"}
    return config


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_node(directory: Path, name: str, config: dict[str, Any], workers: int = 1) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return Node(
        name=name,
        config_path=config_path,
        log_path=directory / f"{name}.stderr",
        public=f"http://127.0.0.1:{config['listen']['port']}",
        admin=f"http://127.0.0.1:{config['admin']['port']}",
        workers=workers,
    )


@contextlib.asynccontextmanager
async def served_upstream(directory: Path) -> AsyncIterator[str]:
    """An upstream_example process on a free port, stopped on exit: its URL."""
    port = free_port()
    log_path = directory / "upstream.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "upstream_example", "--port", str(port)],
            cwd=directory,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_until_answers(f"{url}/status", proc, log_path)
        yield url
    finally:
        stop(proc)


# --- talking to nodes ---


async def cli_key(config_path: Path, name: str, scopes: str) -> str:
    """A new key of org acme, minted with ``gateway key create``: its secret."""
    created = await cli_json(
        config_path, "key", "create", "--org", "acme", "--name", name, "--scopes", scopes
    )
    secret: str = created["key"]
    return secret


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]
    seconds: float

    @property
    def error(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return None


async def send(
    http: aiohttp.ClientSession,
    url: str,
    key: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Reply:
    sent = dict(headers or {})
    if key is not None:
        sent["X-API-Key"] = key
    started = time.monotonic()
    async with http.request(method, url, headers=sent) as response:
        raw = await response.read()
        body = await response.json() if response.content_type == "application/json" else raw
        return Reply(response.status, body, response.headers, time.monotonic() - started)


async def spread(
    http: aiohttp.ClientSession, urls: list[str], key: str, concurrency: int
) -> list[Reply]:
    """GET every url with ``key``, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> Reply:
        async with gate:
            return await send(http, url, key)

    return list(await asyncio.gather(*(one(u) for u in urls)))


def outcomes(replies: list[Reply]) -> Counter[tuple[int, str | None]]:
    return Counter((r.status, r.error) for r in replies)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def scrape(http: aiohttp.ClientSession, admin: str) -> str:
    async with http.get(f"{admin}/metrics") as response:
        assert response.status == 200
        return await response.text()


# --- the README's examples, run as written ------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def readme_block(after: str, language: str) -> str:
    """The first ``language`` code block of the README after the text ``after``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(after) :]
    block = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert block is not None, f"no {language} block after {after!r}"
    return block.group(1)


class Example:
    """Processes of a README example on its fixed ports; ``close`` stops them all."""

    def __init__(self, directory: Path, ports: tuple[int, ...]) -> None:
        self.nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if self.nginx is None:
            pytest.skip("SKIP the README's nginx examples: nginx is not installed")
        free_or_fail(ports, "the README's example")
        self.directory = directory
        self.log_path = directory / "example.log"
        self.log = self.log_path.open("ab")
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=self.directory, env=env, stdout=self.log, stderr=self.log)
        self.procs.append(proc)
        return proc

    def start_nginx(self, server_block: str) -> subprocess.Popen[bytes]:
        """Debian's nginx as our own process, serving ``server_block``."""
        assert self.nginx is not None
        prefix = self.directory / "nginx"
        (prefix / "tmp").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(
            "daemon off; pid nginx.pid; error_log stderr warn;\n"
            "events { worker_connections 256; }\n"
            "http { access_log off; client_body_temp_path tmp; proxy_temp_path tmp;\n"
            f"{server_block}}}\n"
        )
        return self.start([self.nginx, "-p", str(prefix), "-c", str(conf)], clean_env())

    def close(self) -> None:
        for proc in reversed(self.procs):
            below = descendants(proc.pid)
            stop(proc)
            for pid in below:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()


def shipped_folder(directory: Path) -> Path:
    """A folder holding the shipped config.yaml, for the README's examples that use its
    fixed ports (public 8080, admin 9090, the example upstream 9001)."""
    free_or_fail((8080, 9090, 9001), "the shipped config")
    shutil.copy(ROOT / "config.yaml", directory / "config.yaml")
    return directory


def free_or_fail(ports: tuple[int, ...], user: str) -> None:
    """Fail the test, naming the port, when one of these fixed ports is taken."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(f"port {port}, which {user} uses, is taken")
