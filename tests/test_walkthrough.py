"""The README's OAuth walkthrough, every command in order in one shell, against a
gateway served from the shipped config.yaml beside the example upstream, as a
newcomer runs it after `make run`. The one human step (approving in a browser)
is taken by ``walkthrough_browser.py`` over plain HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Spawned
from nodes import Node, readme_block, shipped_folder
from processes import clean_env, wait_until_answers

BROWSER_STEP = Path(__file__).parent / "walkthrough_browser.py"


@pytest.fixture
async def served(tmp_path: Path, spawned: list[Spawned]) -> Path:
    folder = shipped_folder(tmp_path)
    node = Node("walkthrough", folder / "config.yaml", folder / "gateway.log",
                "http://127.0.0.1:8080", "http://127.0.0.1:9090")  # fmt: skip
    upstream = Node("upstream", folder / "config.yaml", folder / "upstream.log", "", "")
    upstream.argv = lambda: [  # type: ignore[method-assign]
        sys.executable, "-m", "upstream_example", "--port", "9001",
    ]  # fmt: skip
    spawned += [upstream, node]
    proc = upstream.spawn()
    await wait_until_answers("http://127.0.0.1:9001/status", proc, upstream.log_path)
    subprocess.run([sys.executable, "-m", "gateway", "migrate"], cwd=folder, env=clean_env(),
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    await node.start()
    return folder


async def test_the_readme_walkthrough_runs_as_shown(served: Path) -> None:
    script = readme_block("### Walkthrough", "sh")
    authorize = next(line for line in script.splitlines() if line.startswith('echo "http'))
    # The human step: the browser's landing address gives the code the reader copies.
    assert "\nCODE=gwc_...\n" in script
    script = script.replace(
        "\nCODE=gwc_...\n", f'\nCODE=$("$PYTHON" "$BROWSER_STEP" "$({authorize})")\n'
    )
    bin_dir = str(Path(sys.executable).parent)
    env = clean_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        PYTHON=sys.executable,
        BROWSER_STEP=str(BROWSER_STEP),
        PYTHONPATH=str(BROWSER_STEP.parent),
    )
    shell = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=served, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(shell.communicate(), 120)
    assert shell.returncode == 0, err.decode()
    objects = json_objects(out.decode())
    # Steps 3, 4, 6 and 7 print JSON: the tokens, the contacts, the service token, and
    # the introspection (revocation answers 200 with an empty body).
    tokens, contacts, service, introspected = objects
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "contacts:read"
    assert tokens["access_token"].startswith("gwa_") and tokens["refresh_token"].startswith("gwr_")
    assert contacts == {"data": []}  # the organization's contacts, through the gateway
    assert service["token_type"] == "Bearer" and "refresh_token" not in service
    assert introspected == {"active": False}  # revoking the refresh token ended its family


def json_objects(text: str) -> list[dict[str, object]]:
    """Every JSON object printed, in order (curl prints bodies without a newline)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at >= 0:
        obj, end = decoder.raw_decode(text, at)
        found.append(obj)
        at = text.find("{", end)
    return found
