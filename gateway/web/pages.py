"""Rendering our pages with the security headers every one of them carries."""

from __future__ import annotations

import secrets
import sys
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup
from multidict import MultiMapping

from gateway.errors import ValidationFailed


def templates_dir() -> Path:
    """Top-level templates/ in a checkout; share/gateway/templates when installed."""
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "gateway" / "templates"


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=jinja2.select_autoescape(default=True),
    )
    env.filters["when"] = when


def when(moment: str | None) -> Markup | str:
    """An RFC 3339 time as people read it ("7 Dec 2026, 19:40"), the exact time on hover;
    anything else ("never", nothing) as it is."""
    if not moment:
        return ""
    try:
        at = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return moment
    exact = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    shown = f"{at.day} {at.strftime('%b %Y, %H:%M')}"
    return Markup(f'<time datetime="{escape(moment)}" title="{exact}">{shown}</time>')  # noqa: S704


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    form_targets: tuple[str, ...] = (),
    scripts: bool = False,
) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    response = aiohttp_jinja2.render_template(
        template, request, {**context, "nonce": nonce}, status=status
    )
    # form-action also governs where a submitted form may be redirected to, so the
    # consent page lists the client's validated redirect origin.
    form_action = " ".join(("'self'", *form_targets))
    response.headers.update(
        {
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
                + (f"script-src 'nonce-{nonce}'; " if scripts else "")
                + f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
    )
    return response


def error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return render(request, "error.html", {"title": title, "detail": detail}, status=status)


def form_list(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def optional_int(form: MultiMapping[Any], name: str) -> int | None:
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValidationFailed(name, "a whole number")
    return int(text)
