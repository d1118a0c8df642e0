"""Soak: the gateway under sustained load on loopback while keys and tokens are
created and revoked beside it (not part of `make test`).

Starts upstream_example and the gateway (`--workers 2` unless told otherwise,
SQLite), then for ``--minutes`` (default 10):
- ``--clients`` connections call a route with a pool of live API keys and OAuth
  tokens, as fast as they are answered;
- a churner keeps creating keys through the management API and tokens through
  the token endpoint, uses each, revokes it (key revoke, token revocation), and
  at once sends the revoked credential on fresh connections.

It reports, per minute and in total: requests, errors other than intended
refusals (must be 0), revoked credentials accepted after their revocation
returned (must be 0: reported at once and after ``cache.poll_interval``),
p50/p99 latency, and the gateway's RSS (must plateau). It exits 1 when a must
is not met. Everything it starts is stopped by PID at the end.

    python bench/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from run import PY, ROOT, Processes, cli, free_port, rss_mb, wait_port, worker_pids

SCOPE = "soak:read"


@dataclass
class Minute:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    revoked_accepted_at_once: int = 0
    revoked_accepted_later: int = 0
    churned: int = 0
    rss: float = 0.0


@dataclass
class Soak:
    base: str
    admin_key: str
    client_id: str
    client_secret: str
    deadline: float
    started: float = field(default_factory=time.monotonic)
    minutes: list[Minute] = field(default_factory=list)
    live: list[dict[str, str]] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def client_auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(self.client_id, self.client_secret)}

    def now(self) -> Minute:
        last = max(0, math.ceil((self.deadline - self.started) / 60) - 1)
        index = min(int((time.monotonic() - self.started) // 60), last)
        while len(self.minutes) <= index:
            self.minutes.append(Minute())
        return self.minutes[index]

    def error(self, what: str) -> None:
        self.now().errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(what)


async def load(soak: Soak, http: aiohttp.ClientSession, n: int) -> None:
    """One client: a live credential per call, as fast as answers come."""
    while time.monotonic() < soak.deadline:
        headers = soak.live[n % len(soak.live)]
        n += 1
        started = time.perf_counter()
        try:
            async with http.get(soak.base + "/soak/echo/x", headers=headers) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            soak.error(f"load: {type(exc).__name__}")
            continue
        minute = soak.now()
        minute.requests += 1
        minute.latencies.append(time.perf_counter() - started)
        if status != 200:
            soak.error(f"load: status {status}")


async def fresh_status(base: str, headers: dict[str, str]) -> int:
    """The status of one call on a connection of its own."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one,
        one.get(base + "/soak/echo/x", headers=headers) as resp,
    ):
        return resp.status


async def churn(soak: Soak, http: aiohttp.ClientSession, poll: float) -> None:
    """Create, use and revoke credentials; count any accepted after revocation."""
    admin = {"X-API-Key": soak.admin_key}
    keys = "/_gateway/v1/keys"
    n = 0
    while time.monotonic() < soak.deadline:
        n += 1
        try:
            async with http.post(soak.base + keys, headers=admin,
                                 json={"name": f"churn-{n}", "scopes": [SCOPE]}) as resp:  # fmt: skip
                created = await resp.json()
                if resp.status != 201:
                    soak.error(f"create key: {resp.status} {created}")
                    continue
            key = {"X-API-Key": created["key"]}
            async with http.post(soak.base + "/oauth/token", data={
                "grant_type": "client_credentials", "scope": SCOPE,
            }, headers=soak.client_auth) as resp:  # fmt: skip
                token = await resp.json()
                if resp.status != 200:
                    soak.error(f"token: {resp.status} {token}")
                    continue
            bearer = {"Authorization": f"Bearer {token['access_token']}"}
            for creds in (key, bearer):
                if (status := await fresh_status(soak.base, creds)) != 200:
                    soak.error(f"new credential: {status}")
            async with http.delete(soak.base + f"{keys}/{created['id']}", headers=admin) as resp:
                if resp.status not in (200, 204):
                    soak.error(f"revoke key: {resp.status}")
            async with http.post(soak.base + "/oauth/revoke", data={
                "token": token["access_token"],
            }, headers=soak.client_auth) as resp:  # fmt: skip
                if resp.status != 200:
                    soak.error(f"revoke token: {resp.status}")
            statuses = await asyncio.gather(*(fresh_status(soak.base, c) for c in (key, bearer)))
            soak.now().revoked_accepted_at_once += sum(s == 200 for s in statuses)
            await asyncio.sleep(poll)
            statuses = await asyncio.gather(*(fresh_status(soak.base, c) for c in (key, bearer)))
            soak.now().revoked_accepted_later += sum(s == 200 for s in statuses)
            soak.now().churned += 1
        except aiohttp.ClientError as exc:
            soak.error(f"churn: {type(exc).__name__}")


async def sample_rss(soak: Soak, supervisor: int) -> None:
    while time.monotonic() < soak.deadline:
        soak.now().rss = rss_mb([supervisor, *worker_pids(supervisor)])
        await asyncio.sleep(5)


async def drive(soak: Soak, clients: int, supervisor: int, poll: float) -> None:
    connector = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(
            *(load(soak, http, n) for n in range(clients)),
            churn(soak, http, poll),
            sample_rss(soak, supervisor),
        )


def report(soak: Soak) -> bool:
    print("| minute | requests | errors | revoked accepted (at once / later) | p50 ms | "
          "p99 ms | RSS MB |")  # fmt: skip
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for i, m in enumerate(soak.minutes):
        lat = sorted(m.latencies) or [0.0]
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        print(f"| {i + 1} | {m.requests:,} | {m.errors} | {m.revoked_accepted_at_once} / "
              f"{m.revoked_accepted_later} | {p50:.2f} | {p99:.2f} | {m.rss:.0f} |")  # fmt: skip
    errors = sum(m.errors for m in soak.minutes)
    at_once = sum(m.revoked_accepted_at_once for m in soak.minutes)
    later = sum(m.revoked_accepted_later for m in soak.minutes)
    churned = sum(m.churned for m in soak.minutes)
    rss = [m.rss for m in soak.minutes if m.rss]
    # Plateau: the last minute holds no more than 10% above the second minute.
    plateau = len(rss) < 3 or rss[-1] <= rss[1] * 1.10
    print(f"\ntotal: {sum(m.requests for m in soak.minutes):,} requests, {errors} errors, "
          f"{churned} credentials created and revoked, revoked accepted at once: {at_once}, "
          f"after the poll interval: {later}; RSS {rss[0] if rss else 0:.0f} -> "
          f"{rss[-1] if rss else 0:.0f} MB ({'plateau' if plateau else 'GROWING'})")  # fmt: skip
    for sample in soak.error_samples:
        print("  error:", sample)
    return errors == 0 and at_once == 0 and later == 0 and plateau


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    procs = Processes()
    try:
        ok = run(work, procs, args)
    finally:
        procs.stop_all()
    sys.exit(0 if ok else 1)


def run(work: Path, procs: Processes, args: argparse.Namespace) -> bool:
    port, admin, example = free_port(), free_port(), free_port()
    poll = 0.5
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "public_url": f"http://127.0.0.1:{port}",
        "database": {"url": f"sqlite:///{work / 'gateway.db'}"},
        "scopes": {SCOPE: "Read"},
        "upstreams": {"example": {"url": f"http://127.0.0.1:{example}"}},
        "routes": [
            {
                "path": "/soak/echo/**",
                "scopes": [SCOPE],
                "upstream": "example",
                "strip_prefix": "/soak",
            }
        ],
        "limits": {"per_credential": None, "per_org": None},
        "cache": {"poll_interval": poll},
        "logging": {"level": "WARNING", "access_log": False},
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    cli(path, "migrate")
    cli(path, "org", "create", "soak")
    admin_key = cli(path, "key", "create", "--org", "soak", "--name", "admin",
                    "--scopes", "gateway:admin")["key"]  # fmt: skip
    client = cli(path, "client", "create", "--name", "soak", "--grant-type",
                 "client_credentials", "--org", "soak", "--scopes", SCOPE)  # fmt: skip
    live = [{"X-API-Key": cli(path, "key", "create", "--org", "soak", "--name", f"live-{i}",
                              "--scopes", SCOPE)["key"]} for i in range(8)]  # fmt: skip
    procs.start([PY, "-m", "upstream_example", "--port", str(example)], work / "example.log")
    gateway = procs.start([PY, "-m", "gateway", "--config", str(path), "serve", "--workers",
                           str(args.workers)], work / "gateway.log")  # fmt: skip
    wait_port(example)
    wait_port(port)
    time.sleep(2)  # every worker up
    soak = Soak(f"http://127.0.0.1:{port}", admin_key, client["client_id"],
                client["client_secret"], time.monotonic() + args.minutes * 60, live=live)  # fmt: skip
    print(f"soak: {args.minutes:g} minutes, {args.clients} clients, {args.workers} workers, "
          f"cache.poll_interval {poll} s", flush=True)  # fmt: skip
    asyncio.run(drive(soak, args.clients, gateway.pid, poll))
    log = (work / "gateway.log").read_text(errors="replace")
    tracebacks = log.count("Traceback")
    print(json.dumps({"tracebacks_in_gateway_log": tracebacks}))
    return report(soak) and tracebacks == 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
