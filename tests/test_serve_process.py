"""``gateway serve`` as a real process in front of a real upstream_example process.

The ``served`` fixture starts both on free loopback ports, waits (bounded) for
the admin ``/healthz``, mints a key with the CLI while the gateway runs, and
tears both processes down. The gateway's stderr (its JSON log) goes to a file
the tests read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import yaml
from conftest import base_config, free_port
from processes import clean_env, stop, wait_until_answers

from gateway.crypto import new_api_key
from upstream_example.diagnostics import PATTERN

STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 60.0
MIB = 1024 * 1024
STREAM_BYTES = 512 * MIB
RSS_GROWTH_LIMIT = 50 * 1000 * 1000  # bytes
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=5)


def memory(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/PID/status, in bytes (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak_rss(pid: int) -> None:
    """Restart VmHWM from the current RSS (proc(5), clear_refs value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Served:
    """A running gateway process, its upstream, and one key minted with the CLI."""

    gateway: subprocess.Popen[bytes]
    public: str
    admin: str
    db_path: Path
    stderr_path: Path
    org_id: str
    key_id: str
    key: str

    @property
    def key_digest(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def last_used_at(self) -> float | None:
        with sqlite3.connect(self.db_path) as db:
            (row,) = list(
                db.execute("SELECT last_used_at FROM api_keys WHERE id = ?", (self.key_id,))
            )
        value = row[0]
        assert value is None or isinstance(value, float)
        return value


def cli_json(config_path: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), *args, "--json"],
        cwd=config_path.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def log_files(tmp_path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    with (
        (tmp_path / "upstream.log").open("wb") as upstream,
        (tmp_path / "gateway.stderr").open("wb") as gateway,
    ):
        yield upstream, gateway


@pytest.fixture
async def served(tmp_path: Path, log_files: tuple[IO[bytes], IO[bytes]]) -> AsyncIterator[Served]:
    upstream_log, gateway_log = log_files
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "upstream_example", "--port", str(upstream_port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=upstream_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(upstream)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        await wait_until_answers(f"{upstream_url}/status", upstream, tmp_path / "upstream.log")

        db_path = tmp_path / "gateway.db"
        config = base_config(upstream_url, db_path)
        public_port, admin_port = free_port(), free_port()
        config["listen"]["port"] = public_port
        config["admin"]["port"] = admin_port
        # Only the shutdown flush may write last_used_at.
        config["usage"]["flush_interval"] = 3600
        config_path = tmp_path / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config_path), "serve"],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=gateway_log,
        )
        procs.append(gateway)
        admin = f"http://127.0.0.1:{admin_port}"
        await wait_until_answers(f"{admin}/healthz", gateway, tmp_path / "gateway.stderr")

        org = cli_json(config_path, "org", "create", "acme")
        key = cli_json(
            config_path,
            "key", "create", "--org", "acme", "--name", "served", "--scopes", "contacts:read",
        )  # fmt: skip
        yield Served(
            gateway=gateway,
            public=f"http://127.0.0.1:{public_port}",
            admin=admin,
            db_path=db_path,
            stderr_path=tmp_path / "gateway.stderr",
            org_id=org["id"],
            key_id=key["id"],
            key=key["key"],
        )
    finally:
        for proc in reversed(procs):
            stop(proc)


async def assert_json_error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code


# Keys, errors and the admin listener.


async def test_cli_minted_key_works_through_the_served_gateway(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.public}/contacts", headers=served.headers()) as response:
            assert response.status == 200, await response.text()
            assert isinstance((await response.json())["data"], list)

        # A well-formed key the store does not know, and a malformed one.
        for wrong in (new_api_key(), "gwk_" + "A" * 36):
            headers = {"X-API-Key": wrong}
            async with http.get(f"{served.public}/contacts", headers=headers) as response:
                await assert_json_error(response, 401, "unauthorized")
        async with http.get(f"{served.public}/contacts") as response:
            await assert_json_error(response, 401, "unauthorized")


async def test_admin_listener_serves_probes_and_metrics(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.public}/contacts", headers=served.headers()) as response:
            assert response.status == 200

        async with http.get(f"{served.admin}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "workers": {"up": 1, "configured": 1}}
        async with http.get(f"{served.admin}/readyz") as response:
            assert response.status == 200
            ready = await response.json()
            assert ready["status"] == "ready" and len(ready["config"]) == 16
        async with http.get(f"{served.admin}/metrics") as response:
            assert response.status == 200
            metrics = await response.text()
        samples = [
            line for line in metrics.splitlines() if line.startswith("gateway_requests_total{")
        ]
        assert any('route="/contacts"' in line for line in samples), metrics

        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(f"{served.public}{path}") as response:
                await assert_json_error(response, 404, "not_found")


# Shutdown.


async def test_sigterm_exits_cleanly_and_flushes_last_used(served: Served) -> None:
    before = time.time()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{served.public}/contacts", headers=served.headers()) as response,
    ):
        assert response.status == 200
    after = time.time()
    assert served.last_used_at() is None  # flush_interval is an hour: nothing written yet

    served.gateway.send_signal(signal.SIGTERM)
    try:
        code = served.gateway.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within {STOP_TIMEOUT} s of SIGTERM") from None
    assert code == 0, served.stderr()
    assert "Traceback" not in served.stderr()

    last_used = served.last_used_at()
    assert last_used is not None, "the shutdown flush did not write last_used_at"
    assert before - 1 <= last_used <= after + 1


# Streaming with bounded memory.


async def upload_body(total: int, digest: Any) -> AsyncIterator[bytes]:
    """``total`` bytes in 1 MiB chunks, hashed as they are produced; never held whole."""
    block = os.urandom(MIB)
    sent = 0
    while sent < total:
        chunk = block[: min(MIB, total - sent)]
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


async def download(http: aiohttp.ClientSession, url: str, expected: int) -> int:
    """Stream ``url``, check every byte against upstream_example's pattern, count them."""
    reference = PATTERN * (MIB // len(PATTERN) + 1)
    seen = 0
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        if "chunked=1" in url:
            assert "Content-Length" not in response.headers
        else:
            assert response.headers["Content-Length"] == str(expected)
        async for chunk in response.content.iter_chunked(MIB):
            offset = seen % len(PATTERN)
            assert chunk == reference[offset : offset + len(chunk)], f"bad bytes at {seen}"
            seen += len(chunk)
    return seen


async def test_large_bodies_stream_with_bounded_memory(served: Served) -> None:
    pid = served.gateway.pid
    phases: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=served.headers(), timeout=TRANSFER_TIMEOUT) as http:
        # Warm up (imports, pools, caches) before the baseline.
        async with http.post(f"{served.public}/echo/warmup", data=b"x" * MIB) as response:
            assert response.status == 200
        baseline = memory(pid, "VmRSS")
        # VmRSS at the end would miss a buffer allocated and freed in between; the
        # high-water mark since this point catches it.
        reset_peak_rss(pid)

        started = time.monotonic()
        digest = hashlib.sha256()
        async with http.post(
            f"{served.public}/echo/upload", data=upload_body(STREAM_BYTES, digest)
        ) as response:
            assert response.status == 200, await response.text()
            echoed = await response.json()
        assert echoed["body_length"] == STREAM_BYTES
        assert echoed["body_sha256"] == digest.hexdigest()
        phases["upload"] = time.monotonic() - started

        url = f"{served.public}/bytes/{STREAM_BYTES}"
        for variant in (url, f"{url}?chunked=1"):
            started = time.monotonic()
            assert await download(http, variant, STREAM_BYTES) == STREAM_BYTES
            phases[variant.removeprefix(served.public)] = time.monotonic() - started

    final, peak = memory(pid, "VmRSS"), memory(pid, "VmHWM")
    print(
        f"\n{STREAM_BYTES} bytes each: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        + f"; RSS {baseline} -> {final} bytes, peak {peak}"
    )
    assert final - baseline < RSS_GROWTH_LIMIT, (baseline, final)
    assert peak - baseline < RSS_GROWTH_LIMIT, (baseline, peak)


# The access log.


async def log_entries(served: Served, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The access log lines of these requests, waiting (bounded) for all to be written."""
    deadline = time.monotonic() + 5
    while True:
        found: dict[str, dict[str, Any]] = {}
        for line in served.stderr().splitlines():
            record = json.loads(line)  # every line of the log is one JSON object
            assert isinstance(record, dict), line
            if record.get("request_id") in request_ids:
                found[record["request_id"]] = record
        if found.keys() == request_ids:
            return found
        assert time.monotonic() < deadline, f"missing {request_ids - found.keys()}"
        await asyncio.sleep(0.05)


async def test_access_log_is_json_without_secrets(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.public}/contacts", headers=served.headers()) as response:
            assert response.status == 200
            keyed = response.headers["X-Request-Id"]
        # The key in the query string too: the log keeps no query.
        async with http.get(
            f"{served.public}/echo/x", params={"api_key": served.key}, headers=served.headers()
        ) as response:
            assert response.status == 200
            queried = response.headers["X-Request-Id"]

    entries = await log_entries(served, {keyed, queried})
    entry = entries[keyed]
    assert entry["route"] == "/contacts"
    assert entry["status"] == 200
    assert entry["org_id"] == served.org_id
    assert entry["credential_id"] == served.key_id
    assert entries[queried]["credential_id"] == served.key_id

    captured = served.stderr()
    assert served.key not in captured
    assert served.key_digest not in captured


def open_files_limit(pid: int) -> tuple[str, str]:
    """(soft, hard) of the process's open-file limit, as /proc shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-file limit in /proc")


async def test_the_served_gateway_runs_at_its_hard_open_file_limit(served: Served) -> None:
    """Every connection is a file descriptor: the soft limit (often 1,024) must not be
    what caps them."""
    soft, hard = open_files_limit(served.gateway.pid)
    assert soft == hard
