"""Where webhooks may go: ``https`` URLs (``http`` only with
``events.allow_http``) whose host resolves to public addresses only, unless
``events.allow_private_targets``: no delivery into the operator's own network
(SSRF). Checked when a subscription is made, and again at every delivery
through the resolver the delivery's connections use, so a name that later
resolves elsewhere (DNS rebinding) is refused too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL = 2000


class TargetRefused(Exception):
    """A URL or address a webhook may not be sent to; the message says why."""


def allowed_address(address: str, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return allow_private or (ip.is_global and not ip.is_multicast)


def check_url(url: str, allow_http: bool, allow_private: bool) -> URL:
    """The URL parsed, or TargetRefused: scheme, host, no credentials, a literal
    address that is allowed."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"a URL has at most {MAX_URL} characters")
    try:
        parsed = URL(url)
    except ValueError:
        raise TargetRefused("not a URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise TargetRefused("the URL must be https" + (" or http" if allow_http else ""))
    if not parsed.raw_host or parsed.user or parsed.password or parsed.fragment:
        raise TargetRefused("the URL needs a host, and no credentials or fragment")
    host = parsed.raw_host.strip("[]")
    if is_address(host) and not allowed_address(host, allow_private):
        raise TargetRefused("the URL's address is private, loopback or reserved")
    return parsed


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def check_host(url: URL, allow_private: bool) -> None:
    """Every address the URL's host resolves to is allowed (at subscription time)."""
    host = (url.raw_host or "").strip("[]")
    if is_address(host):
        return
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, url.port, type=socket.SOCK_STREAM)
    except OSError:
        raise TargetRefused(f"{host} does not resolve") from None
    if not all(allowed_address(str(info[4][0]), allow_private) for info in found):
        raise TargetRefused(f"{host} resolves to a private, loopback or reserved address")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a host with any address that is not allowed."""

    def __init__(self, allow_private: bool) -> None:
        self.inner = DefaultResolver()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not all(allowed_address(str(r["host"]), self.allow_private) for r in found):
            raise OSError(f"{host} resolves to a private, loopback or reserved address")
        return found

    async def close(self) -> None:
        await self.inner.close()
