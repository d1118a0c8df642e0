"""Running the gateway's own commands as processes in tests: one environment, one stop."""

from __future__ import annotations

import os
import subprocess

STOP_TIMEOUT = 15.0


def clean_env(**extra: str) -> dict[str, str]:
    """The runner's environment without GATEWAY_* overrides, unbuffered, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not gone after a grace period."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
