"""The admin listener: /metrics, /healthz, /readyz for the whole node, never on the
public port. The supervisor serves it (``gateway.node.supervisor``) from what its
workers report; an app served on its own reports for itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.web.middleware import render, server_named


class NodeStatus(Protocol):
    async def metrics(self) -> Metrics:
        """The node's totals."""
        ...

    async def unready(self) -> str | None:
        """Why the node cannot serve yet (a worker down, the database unreachable);
        None when it can."""
        ...

    def workers(self) -> tuple[int, int]:
        """Workers up, workers configured."""
        ...

    def config(self) -> str | None:
        """The loaded configuration's hash."""
        ...

    async def reload(self) -> Reload:
        """Read the config file again and switch every worker to it, or refuse."""
        ...


@dataclass(frozen=True, slots=True)
class Reload:
    outcome: str  # "applied", "invalid" (the file is wrong) or "refused"
    config: str | None  # the hash serving after it
    errors: tuple[str, ...] = ()


STATUS: Final = web.AppKey("node_status", NodeStatus)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the node's process answers. Workers that are down are replaced by the
    supervisor, so they make it "degraded", never unhealthy."""
    up, configured = request.app[STATUS].workers()
    return web.json_response({
        "status": "ok" if up == configured else "degraded",
        "workers": {"up": up, "configured": configured},
    })  # fmt: skip


async def readyz(request: web.Request) -> web.Response:
    status = request.app[STATUS]
    why = await status.unready()
    if why is not None:
        return render(ServiceUnavailable(why), "-")
    return web.json_response({"status": "ready", "config": status.config()})


async def reload(request: web.Request) -> web.Response:
    """``gateway reload`` asks here; SIGHUP does the same."""
    done = await request.app[STATUS].reload()
    body = {"outcome": done.outcome, "config": done.config, "errors": list(done.errors)}
    return web.json_response(body, status=200 if done.outcome == "applied" else 422)


async def metrics_view(request: web.Request) -> web.Response:
    metrics = await request.app[STATUS].metrics()
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_admin_app(status: NodeStatus, server: str = "gateway") -> web.Application:
    admin = web.Application()
    admin.on_response_prepare.append(server_named(server))
    admin[STATUS] = status
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics_view)
    admin.router.add_post("/reload", reload)
    return admin
