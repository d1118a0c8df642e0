"""``create_app()``: wiring only (state, middleware, routes)."""

from __future__ import annotations

from aiohttp import web

from upstream_example.contacts import add_contact_routes
from upstream_example.diagnostics import add_diagnostic_routes
from upstream_example.errors import json_errors
from upstream_example.products import add_product_routes
from upstream_example.state import STORE
from upstream_example.store import Store

# The contacts API answers under both prefixes with the same handlers.
CONTACTS_BASES = ("/functions/v1/api-contacts", "/contacts")


def create_app() -> web.Application:
    """Build the example backend; each call starts with empty in-memory data.

    It knows nothing of authentication: org-scoped endpoints trust the
    ``X-Org-Id`` header that the gateway in front of it injects.
    """
    app = web.Application(middlewares=[json_errors])
    app[STORE] = Store()
    for base in CONTACTS_BASES:
        add_contact_routes(app.router, base)
    add_product_routes(app.router)
    add_diagnostic_routes(app.router)
    return app
