"""In-memory data, partitioned by organization.

Every read and write takes the org id first, so one org cannot reach another's
records by id. All access happens on the event loop without an ``await`` in
between, so no locking is needed.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str
    email: str | None
    phone: str | None
    org_id: str
    created_at: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class ContactChanges(TypedDict, total=False):
    """The fields a client may set; absent keys are left as they are."""

    name: str
    email: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    price: float
    sku: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _OrgData:
    contacts: dict[str, Contact] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    product_ids_by_sku: dict[str, str] = field(default_factory=dict)


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """Contacts and products of every organization, lost on restart."""

    def __init__(self) -> None:
        self._orgs: dict[str, _OrgData] = {}

    def _org(self, org_id: str) -> _OrgData:
        return self._orgs.setdefault(org_id, _OrgData())

    # Contacts, in creation order.

    def contacts(self, org_id: str) -> Iterator[Contact]:
        return iter(self._org(org_id).contacts.values())

    def contact(self, org_id: str, contact_id: str) -> Contact | None:
        return self._org(org_id).contacts.get(contact_id)

    def add_contact(self, org_id: str, fields: ContactChanges) -> Contact:
        contact = Contact(
            id=_new_id(),
            name=fields["name"],
            email=fields.get("email"),
            phone=fields.get("phone"),
            org_id=org_id,
            created_at=_now(),
        )
        self._org(org_id).contacts[contact.id] = contact
        return contact

    def update_contact(
        self, org_id: str, contact_id: str, changes: ContactChanges
    ) -> Contact | None:
        contacts = self._org(org_id).contacts
        current = contacts.get(contact_id)
        if current is None:
            return None
        updated = dataclasses.replace(current, **changes)
        contacts[contact_id] = updated
        return updated

    def delete_contact(self, org_id: str, contact_id: str) -> bool:
        return self._org(org_id).contacts.pop(contact_id, None) is not None

    # Products, in creation order; the SKU is unique within an org.

    def products(self, org_id: str) -> Iterator[Product]:
        return iter(self._org(org_id).products.values())

    def add_product(self, org_id: str, name: str, price: float, sku: str) -> Product | None:
        """Add a product, or return ``None`` if the org already has this SKU."""
        org = self._org(org_id)
        if sku in org.product_ids_by_sku:
            return None
        product = Product(id=_new_id(), name=name, price=price, sku=sku)
        org.products[product.id] = product
        org.product_ids_by_sku[sku] = product.id
        return product
