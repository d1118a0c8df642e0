"""Typed application state shared by the handlers."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from upstream_example.store import Store

STORE: Final = web.AppKey("store", Store)
