"""The contacts API of one organization: list, create, read, update, delete."""

from __future__ import annotations

from aiohttp import web

from upstream_example.errors import NotFound
from upstream_example.state import STORE
from upstream_example.store import Contact, ContactChanges
from upstream_example.validation import (
    JsonObject,
    optional_text,
    org_id,
    read_json_object,
    reject_unknown,
    required_text,
)

_FIELDS = frozenset({"name", "email", "phone"})


def _changes(body: JsonObject, *, partial: bool) -> ContactChanges:
    reject_unknown(body, _FIELDS)
    changes: ContactChanges = {}
    if not partial or "name" in body:
        changes["name"] = required_text(body, "name")
    if "email" in body:
        changes["email"] = optional_text(body, "email")
    if "phone" in body:
        changes["phone"] = optional_text(body, "phone")
    return changes


def _matches(contact: Contact, needle: str) -> bool:
    haystacks = (contact.name, contact.email or "")
    return any(needle in text.casefold() for text in haystacks)


def _found(contact: Contact | None) -> Contact:
    if contact is None:
        raise NotFound("Contact not found.")
    return contact


async def list_contacts(request: web.Request) -> web.Response:
    """``GET <base>?q=``: the org's contacts, optionally filtered on name or email."""
    org = org_id(request)
    needle = request.query.get("q", "").casefold()
    contacts = request.app[STORE].contacts(org)
    return web.json_response({"data": [c.to_json() for c in contacts if _matches(c, needle)]})


async def create_contact(request: web.Request) -> web.Response:
    org = org_id(request)
    changes = _changes(await read_json_object(request), partial=False)
    contact = request.app[STORE].add_contact(org, changes)
    return web.json_response(contact.to_json(), status=201)


async def get_contact(request: web.Request) -> web.Response:
    org = org_id(request)
    contact = _found(request.app[STORE].contact(org, request.match_info["contact_id"]))
    return web.json_response(contact.to_json())


async def update_contact(request: web.Request) -> web.Response:
    """``PATCH <base>/{id}``: only the fields present change; ``null`` clears one."""
    org = org_id(request)
    changes = _changes(await read_json_object(request), partial=True)
    contact_id = request.match_info["contact_id"]
    contact = _found(request.app[STORE].update_contact(org, contact_id, changes))
    return web.json_response(contact.to_json())


async def delete_contact(request: web.Request) -> web.Response:
    org = org_id(request)
    if not request.app[STORE].delete_contact(org, request.match_info["contact_id"]):
        raise NotFound("Contact not found.")
    return web.Response(status=204)


def add_contact_routes(router: web.UrlDispatcher, base: str) -> None:
    """Mount the contacts API at ``base`` (it is served under two prefixes)."""
    item = f"{base}/{{contact_id}}"
    router.add_get(base, list_contacts)  # GET routes answer HEAD too
    router.add_post(base, create_contact)
    router.add_get(item, get_contact)
    router.add_patch(item, update_contact)
    router.add_delete(item, delete_contact)
