"""`make run` as a newcomer meets it: the demo script on the shipped config, in a
folder of its own, on the README's ports. The tour is printed only once the
gateway answers, its curl lines work as printed, and a second run gives the demo
key a new secret instead of adding a key."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from nodes import ROOT, descendants, running, shipped_folder
from processes import clean_env

TOUR = "The gateway answers on"
DEADLINE = 60.0  # seconds for a run to print its tour


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return shipped_folder(tmp_path)


async def run_demo(folder: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start the demo; its output up to the end of the tour."""
    env = clean_env(BIN=str(Path(sys.executable).parent), GATEWAY_SESSION_SECRET="s" * 40)
    proc = await asyncio.create_subprocess_exec(
        "sh", str(ROOT / "scripts" / "run-demo.sh"), cwd=folder, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []

    async def until_tour_ends() -> None:
        while not (seen and "Metrics:" in seen[-1]):
            line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
            assert line, "make run ended:\n" + "".join(seen)
            seen.append(line)

    await asyncio.wait_for(until_tour_ends(), DEADLINE)
    return proc, "".join(seen)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Ctrl-C, as a person would: the whole session ends."""
    below = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        for pid in below:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def demo_keys(folder: Path) -> list[dict[str, object]]:
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "key", "list", "--org", "demo", "--json"],
        cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    data: list[dict[str, object]] = json.loads(listed.stdout)["data"]
    return data


async def test_make_run_prints_a_working_tour_and_keeps_one_demo_key(folder: Path) -> None:
    proc, tour = await run_demo(folder)
    try:
        assert TOUR in tour
        key = re.search(r"\b(gwk_live_\w+)\b", tour)
        assert key is not None, tour
        # The first curl line of the tour, at once: the gateway answers already.
        async with aiohttp.ClientSession() as http:
            headers = {"X-API-Key": key.group(1)}
            async with http.get("http://127.0.0.1:8080/echo", headers=headers) as resp:
                echoed = await resp.json()
                assert resp.status == 200, echoed
            seen = {name.lower(): value for name, value in echoed["headers"]}
            assert seen["x-scopes"] == "contacts:read contacts:write"
            assert seen["x-org-id"].startswith("org_")
            async with http.get("http://127.0.0.1:8080/functions/v1/api-contacts") as resp:
                assert resp.status == 401
                assert "X-API-Key" in (await resp.json())["message"]
        assert 'export PATH="$PWD/' in tour
    finally:
        await stop(proc)
    first = demo_keys(folder)
    assert len(first) == 1

    proc, tour = await run_demo(folder)
    try:
        again = re.search(r"\b(gwk_live_\w+)\b", tour)
        assert again is not None and again.group(1) != key.group(1)
    finally:
        await stop(proc)
    second = demo_keys(folder)
    assert [k["id"] for k in second] == [k["id"] for k in first]  # the same key, a new secret
