"""`make bench`: the gateway beside the arrangement a team would build instead.

Starts on loopback: a fast upstream (nginx `return 200` with a ~200-byte JSON
body), the gateway (`--workers 2`, access log on, metrics on), and the peer:
nginx `auth_request` to a minimal aiohttp service that hashes X-API-Key and
looks it up in a dict (one process, and one per core: the faster counts), and
nginx `auth_request` to the gateway's decision endpoint. Then wrk runs against
each in interleaved rounds, forward and backward in turn (medians of the
rounds), at 64 connections and at 1, and a table is printed. Scale cases follow: 1,000,000 keys in the store, 10,000 routes, and a 1 GiB
upload and download through the gateway with its memory measured.

Everything it starts is stopped by PID at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BODY = json.dumps(
    {"data": [{"id": i, "name": f"contact {i}", "email": f"c{i}@example.com"} for i in range(3)]}
)[:200]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


@dataclass
class Processes:
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)  # fmt: skip
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


def nginx_conf(
    work: Path, upstream_port: int, plain_port: int, auth_peers: list[tuple[int, int, str]]
) -> Path:
    """nginx: the fast upstream, proxy_pass without auth, and one auth_request server
    per (listen port, auth port, auth path): the original method and URI go along,
    as the gateway's decision endpoint reads them."""
    peers = "".join(
        f"""
    upstream auth{auth} {{ server 127.0.0.1:{auth}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            auth_request /_auth;
            proxy_pass http://fast; proxy_http_version 1.1; proxy_set_header Connection "";
        }}
        location = /_auth {{
            internal;
            proxy_pass http://auth{auth}{path}; proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off; proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
        }}
    }}"""
        for listen, auth, path in auth_peers
    )
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    keepalive_requests 100000;
    upstream fast {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{ default_type application/json; return 200 '{BODY}'; }}
    }}
    server {{
        listen 127.0.0.1:{plain_port};
        location / {{ proxy_pass http://fast; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}{peers}
}}
""")
    return conf


WRK_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str],
        script: Path | None = None) -> dict[str, float]:  # fmt: skip
    args = ["wrk", "-t", "2" if connections > 1 else "1", "-c", str(connections),
            "-d", f"{seconds}s", "--latency"]  # fmt: skip
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = WRK_LINE.search(out)
    lat = {
        p: float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u] for p, v, u in LATENCY.findall(out)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "requests": float(total.group(1)) if total else 0.0,
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": lat.get("50", float("nan")),
        "p99": lat.get("99", float("nan")),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def worker_pids(supervisor: int) -> list[int]:
    """The serving workers (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except OSError:
        return []
    return [pid for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def gateway_config(work: Path, port: int, admin: int, upstream_port: int, example_port: int,
                   extra_routes: list[dict[str, Any]] | None = None, db: str = "gateway.db",
                   cache_ttl: float = 30, jwt_key: Path | None = None,
                   decision: bool = False) -> Path:  # fmt: skip
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "public_url": f"http://127.0.0.1:{port}",
        "database": {"url": f"sqlite:///{work / db}"},
        "scopes": {"bench:read": "Read", "bench:write": "Write"},
        "upstreams": {
            "fast": {"url": f"http://127.0.0.1:{upstream_port}"},
            "example": {"url": f"http://127.0.0.1:{example_port}", "timeout": 120},
        },
        "routes": [
            {"path": "/bench/**", "methods": ["GET"], "scopes": ["bench:read"], "upstream": "fast"},
            {"path": "/public/**", "auth": "none", "upstream": "fast"},
            {"path": "/write/**", "scopes": ["bench:write"], "upstream": "fast"},
            {
                "path": "/example/**",
                "scopes": ["bench:read"],
                "upstream": "example",
                "strip_prefix": "/example",
            },
            *(extra_routes or []),
        ],
        "limits": {"per_credential": None, "per_org": None},
        "cache": {"credential_ttl": cache_ttl},
        "session": {"secret": secrets.token_urlsafe(32)},
        "logging": {"level": "INFO", "access_log": True},
    }
    if decision:  # nginx on loopback asks the decision endpoint
        config["decision"] = {"enabled": True}
        config["proxy"] = {"trusted_proxies": ["127.0.0.1/32"]}
    if jwt_key is not None:  # access tokens become JWTs; opaque ones stay valid
        config["tokens"] = {"format": "jwt", "signing_keys": [
            {"kid": "bench", "algorithm": "ES256", "private_key_file": str(jwt_key)}]}  # fmt: skip
    path = work / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def signing_key(work: Path) -> Path:
    """A fresh P-256 private key in PEM, for the JWT access tokens."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = work / "jwt-signing.pem"
    path.write_bytes(pem)
    return path


def cli(config: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([PY, "-m", "gateway", "--config", str(config), *args, "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def fetch_token(base: str, client_id: str, secret: str) -> str:
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret}).encode()  # fmt: skip
    with urllib.request.urlopen(base + "/oauth/token", data=data, timeout=10) as resp:  # noqa: S310
        return str(json.loads(resp.read())["access_token"])


def status_of(url: str, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scale-only", action="store_true")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the gateway at this git commit, on the same database",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: `make bench` installs it with apt-get")
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs = Processes()
    try:
        run(work, procs, args)
    except Exception:
        for log in sorted(work.glob("*.log")):  # what the servers said, before it is gone
            print(f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-15:], sep="\n")
        raise
    finally:
        procs.stop_all()
        nginx_pid = work / "nginx.pid"
        if nginx_pid.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(nginx_pid.read_text().strip()), signal.SIGQUIT)
        if (work / "baseline").exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(work / "baseline")], check=False)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, procs: Processes, args: argparse.Namespace) -> None:
    up, peer, plain, auth, gw, admin, example, slow, slow_admin = (free_port() for _ in range(9))
    peer_n, auth_n, decided = free_port(), free_port(), free_port()
    for d in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
        (work / d).mkdir()
    if args.scale_only:
        digests = work / "digests.txt"
        digests.write_text("")
        subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                        str(nginx_conf(work, up, free_port(), [])), "-p", str(work)],
                       check=True)  # fmt: skip
        procs.start([PY, "-m", "upstream_example", "--port", str(example)], work / "example.log")
        wait_port(example)
        scale(work, procs, args, up, example)
        return
    # The gateway under test issues JWT access tokens; the second one (same database)
    # issues opaque ones, and both kinds are valid at either.
    config = gateway_config(work, gw, admin, up, example, jwt_key=signing_key(work), decision=True)
    cli(config, "migrate")
    cli(config, "org", "create", "bench")
    key = portable(work / "gateway.db", cli(
        config, "key", "create", "--org", "bench", "--name", "bench", "--scopes", "bench:read"
    )["key"])  # fmt: skip
    client = cli(config, "client", "create", "--name", "bench", "--grant-type", "client_credentials",
                 "--org", "bench", "--scopes", "bench:read")  # fmt: skip
    digests = work / "digests.txt"
    digests.write_text(hashlib.sha256(key.encode()).hexdigest() + "\n")

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cores = str(os.cpu_count() or 1)
    for port, processes in ((auth, "1"), (auth_n, cores)):
        procs.start([PY, str(ROOT / "bench" / "auth_service.py"), "--port", str(port),
                     "--digests", str(digests), "--processes", processes],
                    work / f"auth-{processes}.log")  # fmt: skip
    peers = [(peer, auth, "/auth"), (peer_n, auth_n, "/auth"), (decided, gw, "/_gateway/decide")]
    subprocess.run([nginx, "-c", str(nginx_conf(work, up, plain, peers)), "-p", str(work)],
                   check=True)  # fmt: skip
    procs.start([PY, "-m", "upstream_example", "--port", str(example)], work / "example.log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    gateway = procs.start([PY, "-m", "gateway", "--config", str(config), "serve", "--workers", "2"],
                          work / "gateway.log", env)  # fmt: skip
    # A second gateway on the same database: this code again, or (--baseline REF) the
    # code of another commit, checked out beside the work files, measured side by side.
    # Configured as the first (the decision endpoint, nginx trusted) but for the token
    # format, so that the two measure the same path.
    second = gateway_config(work, slow, slow_admin, up, example, decision=True)
    source = ROOT
    if args.baseline:
        source = work / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(source),
                        args.baseline], check=True, capture_output=True)  # fmt: skip
    without = procs.start([PY, "-m", "gateway", "--config", str(second), "serve", "--workers",
                           "2"], work / "gateway-second.log", {**env, "PYTHONPATH": str(source)},
                          cwd=source)  # fmt: skip
    for port in (up, peer, plain, auth, auth_n, gw, example, slow):
        wait_port(port)
    time.sleep(2)  # both workers up
    token = fetch_token(f"http://127.0.0.1:{slow}", client["client_id"], client["client_secret"])
    signed = fetch_token(f"http://127.0.0.1:{gw}", client["client_id"], client["client_secret"])
    if token.startswith("eyJ") or not signed.startswith("eyJ"):
        raise RuntimeError("expected an opaque token and a JWT")

    limited = portable(work / "gateway.db", limited_key(
        f"http://127.0.0.1:{gw}",
        cli(
            config,
            "key",
            "create",
            "--org",
            "bench",
            "--name",
            "admin",
            "--scopes",
            "gateway:admin",
        )["key"],
    ))  # fmt: skip
    cases = [
        ("nginx proxy_pass, no auth", f"http://127.0.0.1:{plain}/x", {}, 200),
        (AUTH_ONE, f"http://127.0.0.1:{peer}/x", {"X-API-Key": key}, 200),
        (AUTH_PER_CORE, f"http://127.0.0.1:{peer_n}/x", {"X-API-Key": key}, 200),
        ("nginx auth_request -> gateway decision endpoint", f"http://127.0.0.1:{decided}/bench/x", {"X-API-Key": key}, 200),
        ("gateway: API key", f"http://127.0.0.1:{gw}/bench/x", {"X-API-Key": key}, 200),
        ("gateway: OAuth Bearer (opaque)", f"http://127.0.0.1:{gw}/bench/x", {"Authorization": f"Bearer {token}"}, 200),
        ("gateway: OAuth Bearer (JWT, ES256)", f"http://127.0.0.1:{gw}/bench/x", {"Authorization": f"Bearer {signed}"}, 200),
        ("gateway: public route (auth: none)", f"http://127.0.0.1:{gw}/public/x", {}, 200),
        ("gateway: 403 refusal (missing scope)", f"http://127.0.0.1:{gw}/write/x", {"X-API-Key": key}, 403),
        (f"gateway at {args.baseline or 'this commit'} (2nd): API key", f"http://127.0.0.1:{slow}/bench/x", {"X-API-Key": key}, 200),
        ("gateway: API key with a rate limit", f"http://127.0.0.1:{gw}/bench/x", {"X-API-Key": limited}, 200),
        (f"gateway at {args.baseline or 'this commit'} (2nd): API key with a rate limit", f"http://127.0.0.1:{slow}/bench/x", {"X-API-Key": limited}, 200),
    ]  # fmt: skip
    for name, url, headers, expected in cases:  # each answers as it should, then warm up
        if (got := status_of(url, headers)) != expected:
            raise RuntimeError(f"{name}: {url} answered {got}, expected {expected}")
        wrk(url, 16, 1, headers)
    # The CPU each gateway's workers spend per request, read from /proc around each run.
    workers = {gw: worker_pids(gateway.pid), slow: worker_pids(without.pid)}
    workers[decided] = workers[gw]  # nginx asks the gateway's decision endpoint
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for connections in (64, 1):
            for name, url, headers, _ in in_order(cases, round_):
                pids = next((p for port, p in workers.items() if f":{port}/" in url), [])
                before = cpu_seconds(pids)
                run = wrk(url, connections, args.seconds, headers)
                used = cpu_seconds(pids) - before
                run["cpu_us"] = used / run["requests"] * 1e6 if pids and run["requests"] else 0.0
                results.setdefault((name, connections), []).append(run)
    rss = [rss_mb([pid]) for pid in workers[gw]]

    def median(name: str, c: int, metric: str) -> float:
        return statistics.median(r[metric] for r in results[(name, c)])

    rows = [["setup", "conns", "req/s", "p50 ms", "p99 ms", "vs auth_request", "vs proxy_pass",
             "gateway CPU µs/req"]]  # fmt: skip
    for connections in (64, 1):
        # The peer as a team would tune it: the faster of one process and one per core.
        peer_rps = max(median(AUTH_ONE, connections, "rps"),
                       median(AUTH_PER_CORE, connections, "rps"))  # fmt: skip
        plain_rps = median(cases[0][0], connections, "rps")
        for name, _, _, _ in cases:
            rps = median(name, connections, "rps")
            rows.append([name, str(connections), f"{rps:,.0f}",
                         f"{median(name, connections, 'p50'):.2f}",
                         f"{median(name, connections, 'p99'):.2f}",
                         f"{rps / peer_rps:.2f}", f"{rps / plain_rps:.2f}",
                         f"{cpu:.0f}" if (cpu := median(name, connections, "cpu_us")) else ""])  # fmt: skip
    built = subprocess.run([PY, "-c", "from gateway.http import heads; print(heads.COMPILED)"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    print(f"\ngateway.http.heads compiled: {built}")
    print(f"\n## Throughput and latency (wrk, {args.seconds} s runs, median of {args.rounds} "
          f"interleaved rounds)\n")  # fmt: skip
    print(table(rows))
    full = median("gateway: API key", 64, "rps")
    public = median("gateway: public route (auth: none)", 64, "rps")
    print("\ngateway RSS per worker: " + ", ".join(f"{mb:.0f} MB" for mb in rss))
    print(
        f"full pipeline vs auth: none on the same gateway: {full / public:.2f} "
        f"({(1 - full / public) * 100:.1f}% cost)"
    )
    procs.stop(gateway)
    procs.stop(without)
    if not args.skip_scale:
        scale(work, procs, args, up, example)


AUTH_ONE = "nginx auth_request -> aiohttp auth service (1 process)"
AUTH_PER_CORE = "nginx auth_request -> aiohttp auth service (1 per core)"


def portable(db: Path, secret: str) -> str:
    """The key behind ``secret``, given a new secret in the format every commit reads
    (``gwk_`` and 36 characters; keys made since test mode read ``gwk_live_``), so that
    a ``--baseline`` from before test mode authenticates the same keys."""
    from gateway import crypto

    legacy = crypto.new_secret(crypto.API_KEY_PREFIX)
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE api_keys SET digest = ?, prefix = ? WHERE digest = ?",
            (crypto.digest(legacy), legacy[:12], crypto.digest(secret)),
        ).rowcount
    if changed != 1:
        raise RuntimeError("the bench key to re-secret was not found")
    return legacy


def limited_key(base: str, admin_key: str) -> str:
    """A key with a rate limit it never reaches: its requests are counted."""
    import urllib.request

    body = json.dumps({"name": "limited", "scopes": ["bench:read"],
                       "limits": {"rate_limit": 1_000_000_000}}).encode()  # fmt: skip
    headers = {"X-API-Key": admin_key, "Content-Type": "application/json"}
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL of our own
        base + "/_gateway/v1/keys", data=body, method="POST", headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        secret: str = json.load(response)["key"]
    return secret


def insert_keys(db: Path, org_id: str, count: int) -> list[str]:
    """Insert ``count`` keys straight into SQLite; return 1000 of their secrets."""
    from gateway import crypto

    sample: list[str] = []
    now = time.time()
    with sqlite3.connect(db) as conn:
        batch = []
        for i in range(count):
            secret = crypto.new_api_key()
            if i % (count // 1000 or 1) == 0 and len(sample) < 1000:
                sample.append(secret)
            batch.append((f"key_bench{i:08d}", org_id, "bulk", secret[:12], "bench:read", now,
                          crypto.digest(secret)))  # fmt: skip
            if len(batch) == 50_000:
                conn.executemany("INSERT INTO api_keys (id, org_id, name, prefix, scopes, "
                                 "created_at, digest) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)  # fmt: skip
                batch = []
        if batch:
            conn.executemany("INSERT INTO api_keys (id, org_id, name, prefix, scopes, created_at, "
                             "digest) VALUES (?, ?, ?, ?, ?, ?, ?)", batch)  # fmt: skip
    return sample


def key_script(work: Path, keys: list[str], name: str) -> Path:
    script = work / f"{name}.lua"
    listed = ", ".join(f'"{k}"' for k in keys)
    script.write_text(f"""
local keys = {{{listed}}}
local i = 0
request = function()
  i = i + 1
  wrk.headers["X-API-Key"] = keys[(i % #keys) + 1]
  return wrk.format(nil)
end
""")
    return script


def serve_one(
    work: Path, procs: Processes, config: Path, workers: int = 1
) -> subprocess.Popen[bytes]:
    proc = procs.start([PY, "-m", "gateway", "--config", str(config), "serve", "--workers",
                        str(workers)], work / f"{config.stem}.log")  # fmt: skip
    cfg = yaml.safe_load(config.read_text())
    wait_port(cfg["listen"]["port"])
    time.sleep(1.5 if workers > 1 else 0.3)
    return proc


def in_order(cases: list[Any], round_: int) -> list[Any]:
    """The cases of one round: forward in even rounds, backward in odd ones. A case run
    early in a round measured slower than the same case run late (this machine drifts
    within a round), so a fixed order would favour the cases at its end."""
    return cases if round_ % 2 == 0 else cases[::-1]


def interleaved(
    cases: list[tuple[str, str, dict[str, str], Path | None]], args: argparse.Namespace
) -> list[list[str]]:
    """Table rows for cases measured in interleaved rounds: medians of req/s at 64
    connections and of p50/p99 at one."""
    runs: dict[str, list[dict[str, float]]] = {}
    for _, url, headers, script in cases:
        wrk(url, 8, 1, headers, script)  # warm up
    for round_ in range(args.rounds):
        for label, url, headers, script in in_order(cases, round_):
            many = wrk(url, 64, args.seconds, headers, script)
            one = wrk(url, 1, args.seconds, headers, script)
            runs.setdefault(label, []).append({"rps": many["rps"], **{
                k: one[k] for k in ("p50", "p99")}})  # fmt: skip
    return [[label, f"{statistics.median(r['rps'] for r in runs[label]):,.0f}",
             f"{statistics.median(r['p50'] for r in runs[label]):.2f}",
             f"{statistics.median(r['p99'] for r in runs[label]):.2f}"]
            for label, _, _, _ in cases]  # fmt: skip


def scale(work: Path, procs: Processes, args: argparse.Namespace, up: int, example: int) -> None:
    print("\n## Scale\n")
    rows = [["case", "req/s (c64)", "p50 ms (c1)", "p99 ms (c1)"]]
    # Each comparison runs its cases side by side, in interleaved rounds (medians), as
    # the throughput table does: one run of each, one after the other, measured the
    # machine's drift as often as the difference between the cases.
    # 1) key lookups from the store: the cache is off so every request reads the store.
    keyed: list[tuple[str, str, dict[str, str], Path | None]] = []
    servers = []
    for count in (1_000, 1_000_000):
        port, admin = free_port(), free_port()
        config = gateway_config(work, port, admin, up, example, db=f"keys{count}.db", cache_ttl=0)
        cli(config, "migrate")
        org = cli(config, "org", "create", "bulk")
        started = time.monotonic()
        keys = insert_keys(work / f"keys{count}.db", org["id"], count)
        inserted = time.monotonic() - started
        servers.append(serve_one(work, procs, config))
        keyed.append((f"{count:,} keys in SQLite, no cache (insert {inserted:.0f} s)",
                      f"http://127.0.0.1:{port}/bench/x", {},
                      key_script(work, keys, f"keys{count}")))  # fmt: skip
    rows += interleaved(keyed, args)
    # 2) 10,000 routes in the map; the benchmark hits the first one and a deep one.
    port, admin = free_port(), free_port()
    extra = [{"path": f"/r{i}/{{id}}/items", "methods": ["GET"], "scopes": ["bench:read"],
              "upstream": "fast"} for i in range(10_000)]  # fmt: skip
    config = gateway_config(work, port, admin, up, example, extra_routes=extra, db="routes.db")
    cli(config, "migrate")
    cli(config, "org", "create", "bench")
    key = cli(config, "key", "create", "--org", "bench", "--name", "r", "--scopes", "bench:read")[
        "key"
    ]
    servers.append(serve_one(work, procs, config))
    routed = [(label, f"http://127.0.0.1:{port}{path}", {"X-API-Key": key}, None)
              for label, path in (("route map of 10,004: first route", "/bench/x"),
                                  ("route map of 10,004: 10,000th route", "/r9999/42/items"))]  # fmt: skip
    rows += interleaved(routed, args)
    for server in servers:
        procs.stop(server)
    print(table(rows))
    # 3) 1 GiB up and down, streamed, with the gateway's memory watched.
    port, admin = free_port(), free_port()
    config = gateway_config(work, port, admin, up, example, db="stream.db")
    cli(config, "migrate")
    cli(config, "org", "create", "bench")
    key = cli(config, "key", "create", "--org", "bench", "--name", "s", "--scopes", "bench:read")[
        "key"
    ]
    proc = serve_one(work, procs, config)
    print(asyncio.run(stream_gib(port, key, proc.pid)))
    procs.stop(proc)


async def stream_gib(port: int, key: str, pid: int) -> str:
    import aiohttp

    size = 1 << 30
    before = rss_mb([pid])
    peak = before
    block = b"\0" * (1 << 20)

    async def body() -> Any:
        nonlocal peak
        for i in range(size // len(block)):
            if i % 64 == 0:
                peak = max(peak, rss_mb([pid]))
            yield block

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.monotonic()
        async with session.put(f"http://127.0.0.1:{port}/example/echo/upload", data=body(),
                               headers={"X-API-Key": key}) as resp:  # fmt: skip
            echo = await resp.json()
        up_s = time.monotonic() - started
        started = time.monotonic()
        got = 0
        async with session.get(f"http://127.0.0.1:{port}/example/bytes/{size}",
                               headers={"X-API-Key": key}) as resp:  # fmt: skip
            async for chunk in resp.content.iter_chunked(1 << 20):
                got += len(chunk)
                if got % (64 << 20) < len(chunk):
                    peak = max(peak, rss_mb([pid]))
        down_s = time.monotonic() - started
    ok = echo.get("body_length") == size and got == size
    return (f"\n1 GiB upload {up_s:.1f} s, download {down_s:.1f} s, bytes intact: {ok}; "
            f"gateway RSS {before:.0f} MB before, peak {peak:.0f} MB "
            f"(grew {peak - before:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
