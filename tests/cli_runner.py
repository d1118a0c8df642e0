"""Run the ``gateway`` command from an async test without blocking its event loop.

A gateway served by the test (the ``gw`` fixture) shares the SQLite file with
the CLI; blocking the loop while the CLI writes could stall the gateway inside
a transaction and make the CLI wait for the database lock.

Also what every CLI test needs around it: a config file to point ``--config`` at
(``write_config``) and the shape of a refusal (``assert_refused``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from processes import clean_env

CLI_TIMEOUT = 15.0


async def run_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateway --config PATH ARGS...`` from an empty directory, bounded in time."""
    workdir = config_path.parent / "cli-cwd"
    workdir.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "gateway", "--config", str(config_path), *args]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv!r} did not finish within {CLI_TIMEOUT} s") from None
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


async def cli_json(config_path: Path, *args: str) -> dict[str, Any]:
    """A ``--json`` command that must succeed: its one JSON object."""
    result = await run_cli(config_path, *args, "--json")
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict), data
    return data


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one line on stderr (naming every needle), nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == "", result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
