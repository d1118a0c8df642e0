"""The Store contract, run against SQLite and PostgreSQL alike.

Every test takes the parametrized ``store`` fixture: a connected, migrated store
on a database of its own (a file under ``tmp_path``, or a fresh PostgreSQL
schema reached through ``search_path``). PostgreSQL is used when
``GATEWAY_TEST_POSTGRES_URL`` names a server; without it each of those tests is
skipped with the reason ``SKIP postgres store tests: ...`` (``-ra`` lists it), so
they never pass silently. A server that is set but unreachable fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from gateway import crypto
from gateway.config import settings_from_dict
from gateway.store import Conflict, Store, StoreUnavailable, open_store
from gateway.store.postgres import PostgresStore
from gateway.store.records import (
    ApiKey,
    AuthCode,
    Debit,
    ErrorRow,
    Event,
    KeptAnswer,
    OAuthClient,
    OAuthToken,
    Org,
    Outcome,
    Subscription,
    UsageRow,
    User,
)
from gateway.store.sql import migration_files
from gateway.store.tables_wallet import IDEMPOTENCY_WINDOW

POSTGRES_ENV = "GATEWAY_TEST_POSTGRES_URL"
NO_POSTGRES = f"SKIP postgres store tests: {POSTGRES_ENV} is not set"
BACKENDS = ("sqlite", "postgres")
MIGRATIONS = [name for name, _ in migration_files("")]
T0 = 1_700_000_000.0  # a fixed "now": stored times must come back exactly
HOUR = 3600.0
FINGERPRINT = crypto.digest("POST /paid/echo")


# --- databases -----------------------------------------------------------------------------


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema``, keeping any query (and ``options``) it has."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = [value for name, value in query if name == "options"]
    query = [(name, value) for name, value in query if name != "options"]
    query.append(("options", " ".join([*options, f"-csearch_path={schema}"])))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@dataclass
class Database:
    """An empty database of one backend; stores opened on it are closed at the end."""

    url: str
    opened: list[Store] = field(default_factory=list)

    async def open(self) -> Store:
        """A connected store, not yet migrated."""
        store = open_store(settings_from_dict({"database": {"url": self.url}}))
        await store.connect()
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


@contextlib.asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / f'store-{secrets.token_hex(4)}.db'}")
        try:
            yield db
        finally:
            await db.close_all()
        return
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(NO_POSTGRES)
    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        db = Database(with_search_path(server, schema))
        try:
            yield db
        finally:
            await db.close_all()
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


def backend_of(store: Store) -> str:
    return "postgres" if isinstance(store, PostgresStore) else "sqlite"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with fresh_database(request.param, tmp_path) as db:
        opened = await db.open()
        await opened.migrate()
        yield opened


# --- records -------------------------------------------------------------------------------


def digest(label: str) -> str:
    return crypto.digest(f"secret-{label}")


async def new_org(store: Store, name: str = "acme", at: float = T0) -> Org:
    org = Org(id=f"org_{name}", name=name, created_at=at)
    await store.create_org(org)
    return org


async def new_key(store: Store, org: Org, key_id: str, **fields: Any) -> ApiKey:
    defaults: dict[str, Any] = {
        "name": f"{key_id} name",
        "prefix": f"gwk_{key_id[-4:]}",
        "scopes": ("contacts:read",),
        "created_at": T0,
    }
    key = ApiKey(id=key_id, org_id=org.id, **(defaults | fields))
    await store.insert_api_key(key, digest(key_id))
    return key


async def new_user(store: Store, email: str = "ada@example.com") -> User:
    user = User(id=f"user_{email.split('@')[0]}", email=email, created_at=T0)
    await store.create_user(user, f"argon2-hash-of-{email}")
    return user


async def new_client(
    store: Store, client_id: str, owner: Org | None = None, **fields: Any
) -> OAuthClient:
    defaults: dict[str, Any] = {
        "name": f"{client_id} app",
        "redirect_uris": ("https://app.example/cb", "http://127.0.0.1:9/cb"),
        "allowed_scopes": ("contacts:read", "contacts:write"),
        "grant_types": ("authorization_code", "refresh_token"),
        "created_at": T0,
        "owner_org_id": owner.id if owner else None,
    }
    client = OAuthClient(id=client_id, public=False, **(defaults | fields))
    await store.insert_client(client, digest(client_id))
    return client


@dataclass(frozen=True)
class Consent:
    """A user's grant for a client in an org, with what it took to make one."""

    org: Org
    user: User
    client: OAuthClient
    grant_id: str


async def new_consent(store: Store) -> Consent:
    org = await new_org(store)
    user = await new_user(store)
    client = await new_client(store, "client_a", org)
    grant_id = await store.upsert_grant("grant_a", user.id, org.id, client.id, ("a",), T0)
    return Consent(org, user, client, grant_id)


def make_code(consent: Consent, code_id: str = "code_a") -> AuthCode:
    return AuthCode(
        id=code_id,
        client_id=consent.client.id,
        redirect_uri="https://app.example/cb",
        user_id=consent.user.id,
        org_id=consent.org.id,
        grant_id=consent.grant_id,
        scopes=("contacts:read", "contacts:write"),
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        created_at=T0,
        expires_at=T0 + 60,
    )


def make_token(
    consent: Consent, token_id: str, kind: str = "refresh", family: str = "fam_a"
) -> OAuthToken:
    return OAuthToken(
        id=token_id,
        kind=kind,
        family_id=family,
        client_id=consent.client.id,
        org_id=consent.org.id,
        scopes=("contacts:read",),
        created_at=T0,
        expires_at=T0 + HOUR,
        user_id=consent.user.id,
        grant_id=consent.grant_id,
    )


async def insert_tokens(store: Store, *tokens: OAuthToken) -> None:
    await store.insert_tokens([(t, digest(t.id)) for t in tokens])


async def token(store: Store, token_id: str) -> OAuthToken:
    found = await store.find_token(digest(token_id))
    assert found is not None, token_id
    return found


async def api_key(store: Store, key_id: str) -> ApiKey:
    found = await store.get_api_key(key_id)
    assert found is not None, key_id
    return found


async def events_after(store: Store, seq: int) -> list[str]:
    return [credential_id for _, credential_id in await store.credential_events_since(seq)]


async def newest_event(store: Store) -> int:
    events = await store.credential_events_since(0)
    return events[-1][0] if events else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- lifecycle -----------------------------------------------------------------------------


async def test_migrate_applies_each_migration_once(store: Store, tmp_path: Path) -> None:
    assert sorted(MIGRATIONS) == MIGRATIONS and len(MIGRATIONS) >= 5
    assert await store.migrate() == []
    async with fresh_database(backend_of(store), tmp_path) as db:
        first = await db.open()
        assert await first.migrate() == MIGRATIONS
        assert await first.migrate() == []
        assert await (await db.open()).migrate() == []  # another node on the same database


async def test_concurrent_migrations_on_postgres_apply_once(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as db:
        nodes = [await db.open() for _ in range(2)]
        applied = await asyncio.gather(*(node.migrate() for node in nodes))
        assert sorted(applied, key=len) == [[], MIGRATIONS]
        conn = await asyncpg.connect(db.url)
        try:
            rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
        finally:
            await conn.close()
        assert [r["name"] for r in rows] == MIGRATIONS
        for node in nodes:
            await node.ping()


async def test_ping_answers(store: Store) -> None:
    await store.ping()


async def test_calls_after_close_raise_store_unavailable(store: Store) -> None:
    org = await new_org(store)
    await store.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        store.ping,
        store.migrate,
        lambda: store.find_org(org.id),
        lambda: store.create_org(Org("org_x", "x", T0)),
        lambda: store.credential_events_since(0),
        lambda: store.record_last_used({"key_a": T0}, {"key_a": 1}),
        lambda: store.consume_code(digest("code"), T0),
        lambda: debit(store, org, "key_a"),
        lambda: store.wallet_settle(1, KEPT, T0),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call()


async def test_unreachable_database_raises_store_unavailable(store: Store, tmp_path: Path) -> None:
    if backend_of(store) == "postgres":
        server = urlsplit(os.environ[POSTGRES_ENV])
        nobody_listens = f"{server.username or 'postgres'}@127.0.0.1:{free_port()}"
        url = urlunsplit(server._replace(netloc=nobody_listens))
    else:
        not_a_folder = tmp_path / "plain-file"
        not_a_folder.write_text("")
        url = f"sqlite:///{not_a_folder / 'gateway.db'}"
    unreachable = open_store(settings_from_dict({"database": {"url": url, "timeout": 2}}))
    with pytest.raises(StoreUnavailable):
        await unreachable.connect()
    await unreachable.close()


# --- organizations -------------------------------------------------------------------------


async def test_org_names_are_unique_and_found_by_id_or_name(store: Store) -> None:
    acme = await new_org(store, "acme")
    with pytest.raises(Conflict):
        await store.create_org(Org("org_other", "acme", T0 + 1))
    assert await store.find_org(acme.id) == acme
    assert await store.find_org("acme") == acme
    assert await store.find_org("nobody") is None
    # A name that looks like another org's id: the id wins.
    named_like_id = Org("org_zzz", acme.id, T0 + 2)
    await store.create_org(named_like_id)
    assert await store.find_org(acme.id) == acme


async def test_list_orgs_in_creation_order(store: Store) -> None:
    late = await new_org(store, "late", T0 + 10)
    early = await new_org(store, "early", T0)
    assert await store.list_orgs() == [early, late]


# --- API keys ------------------------------------------------------------------------------


async def test_api_key_round_trips_every_field(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(
        store,
        org,
        "key_full",
        scopes=("contacts:read", "contacts:write"),
        expires_at=T0 + 86_400,
        last_used_at=T0 + 5,
        max_requests=1000,
        rate_limit=60,
        allowed_ips=("10.0.0.0/8", "2001:db8::/32"),
        request_count=7,
        max_paid_requests=3,
        max_spend=50,
    )
    bare = await new_key(store, org, "key_bare")
    assert await store.get_api_key(key.id) == key
    assert await store.get_api_key(bare.id) == bare
    assert await store.get_api_key("key_nope") is None
    found = await store.find_api_key_by_digest(digest(key.id), T0)
    assert found is not None
    assert (found.key, found.digest) == (key, digest(key.id))
    assert await store.find_api_key_by_digest(digest("key_nope"), T0) is None


async def test_api_key_digest_is_unique(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    with pytest.raises(Conflict):
        await store.insert_api_key(replace(key, id="key_b"), digest(key.id))


async def test_api_keys_listed_by_creation_and_paged_by_id(store: Store) -> None:
    org, other = await new_org(store, "acme"), await new_org(store, "other")
    ids = ["key_c", "key_a", "key_e", "key_b", "key_d"]  # created in this order
    for i, key_id in enumerate(ids):
        await new_key(store, org, key_id, created_at=T0 + i)
    await new_key(store, other, "key_0")
    assert [k.id for k in await store.list_api_keys(org.id)] == ids
    pages, after = [], None
    while page := await store.list_api_keys_page(org.id, after, 2):
        pages.append([k.id for k in page])
        after = page[-1].id
    assert pages == [["key_a", "key_b"], ["key_c", "key_d"], ["key_e"]]
    assert await store.list_api_keys_page(org.id, "key_e", 2) == []
    assert [k.id for k in await store.list_api_keys(other.id)] == ["key_0"]


async def test_revoke_api_key_once(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    before = await newest_event(store)
    assert await store.revoke_api_key(key.id, T0 + 1) is True
    assert await store.revoke_api_key(key.id, T0 + 2) is False
    assert await store.revoke_api_key("key_nope", T0 + 2) is False
    revoked = await api_key(store, key.id)
    assert revoked.revoked_at == T0 + 1
    assert not revoked.usable_at(T0 + 1)
    assert await events_after(store, before) == [key.id]
    found = await store.find_api_key_by_digest(digest(key.id), T0 + 3)
    assert found is not None and found.key.revoked_at == T0 + 1  # the caller refuses it


async def test_lookups_see_only_committed_writes_and_do_not_wait_for_them(store: Store) -> None:
    """A credential lookup outside a transaction answers at once from what is committed,
    while another coroutine's write transaction (a usage flush, a revocation) is open."""
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    inside, release = asyncio.Event(), asyncio.Event()

    async def revoke_slowly() -> None:
        async with store.transaction():
            await store.revoke_api_key(key.id, T0 + 1)
            inside.set()
            await release.wait()

    writer = asyncio.create_task(revoke_slowly())
    try:
        await asyncio.wait_for(inside.wait(), 5)
        found = await asyncio.wait_for(store.find_api_key_by_digest(digest(key.id), T0 + 2), 5)
        assert found is not None and found.key.revoked_at is None  # not committed yet
    finally:
        release.set()  # a failed check must not leave the transaction open
        await writer
    found = await store.find_api_key_by_digest(digest(key.id), T0 + 2)
    assert found is not None and found.key.revoked_at == T0 + 1


async def test_update_api_key_writes_fields_and_records_event(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a", request_count=4)
    before = await newest_event(store)
    changed = replace(
        key,
        name="renamed",
        scopes=("contacts:write",),
        expires_at=T0 + HOUR,
        max_requests=10,
        rate_limit=5,
        allowed_ips=("192.0.2.1/32",),
        max_paid_requests=2,
        max_spend=9,
    )
    await store.update_api_key(changed, T0 + 1)
    assert await api_key(store, key.id) == changed
    assert await events_after(store, before) == [key.id]


async def test_rotation_keeps_old_secret_until_grace_ends(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    before = await newest_event(store)
    await store.rotate_api_key(key.id, digest("v2"), "gwk_v2", T0 + 60, T0)
    assert await events_after(store, before) == [key.id]
    assert (await api_key(store, key.id)).prefix == "gwk_v2"
    new = await store.find_api_key_by_digest(digest("v2"), T0 + 1000)
    assert new is not None and (new.key.id, new.digest) == (key.id, digest("v2"))
    old = await store.find_api_key_by_digest(digest(key.id), T0 + 59.9)
    assert old is not None and (old.key.id, old.digest) == (key.id, digest(key.id))
    assert await store.find_api_key_by_digest(digest(key.id), T0 + 60) is None
    assert await store.find_api_key_by_digest(digest(key.id), T0 + 61) is None
    # A second rotation forgets the first secret at once: only one previous digest is kept.
    await store.rotate_api_key(key.id, digest("v3"), "gwk_v3", T0 + 120, T0 + 10)
    assert await store.find_api_key_by_digest(digest(key.id), T0 + 11) is None
    assert await store.find_api_key_by_digest(digest("v2"), T0 + 11) is not None
    assert await store.find_api_key_by_digest(digest("v3"), T0 + 11) is not None


async def test_delete_api_key(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    before = await newest_event(store)
    assert await store.delete_api_key(key.id, T0) is True
    assert await store.delete_api_key(key.id, T0) is False
    assert await store.get_api_key(key.id) is None
    assert await store.find_api_key_by_digest(digest(key.id), T0) is None
    assert await events_after(store, before) == [key.id]


async def test_credential_events_come_back_in_order(store: Store) -> None:
    org = await new_org(store)
    keys = [await new_key(store, org, f"key_{c}") for c in "abcd"]
    start = await newest_event(store)
    assert await store.credential_events_since(start) == []
    await store.update_api_key(replace(keys[2], name="x"), T0)
    await store.revoke_api_key(keys[0].id, T0)
    await store.rotate_api_key(keys[3].id, digest("new"), "gwk_new", T0 + 1, T0)
    await store.delete_api_key(keys[1].id, T0)
    await store.revoke_api_key(keys[3].id, T0)
    events = await store.credential_events_since(start)
    assert [credential_id for _, credential_id in events] == [
        "key_c",
        "key_a",
        "key_d",
        "key_b",
        "key_d",
    ]
    seqs = [seq for seq, _ in events]
    assert seqs == sorted(set(seqs)) and seqs[0] > start
    assert await store.credential_events_since(seqs[-1]) == []


async def test_last_used_never_moves_back_and_counts_add_up(store: Store) -> None:
    org = await new_org(store)
    a, b = await new_key(store, org, "key_a"), await new_key(store, org, "key_b")
    await store.record_last_used({a.id: T0 + 10, b.id: T0 + 5}, {a.id: 3, b.id: 1})
    await store.record_last_used({a.id: T0 + 4}, {a.id: 2})  # an older batch arrives late
    await store.record_last_used({b.id: T0 + 20})
    await store.record_last_used({}, {b.id: 4})
    await store.record_last_used({"key_gone": T0}, {"key_gone": 1})  # deleted meanwhile
    a_now, b_now = await api_key(store, a.id), await api_key(store, b.id)
    assert (a_now.last_used_at, a_now.request_count) == (T0 + 10, 5)
    assert (b_now.last_used_at, b_now.request_count) == (T0 + 20, 5)


# --- usage and recent errors ---------------------------------------------------------------


def usage_row(org: str, day: str, route: str = "contacts", status: int = 200) -> UsageRow:
    return UsageRow(org, day, "key_a", route, status, "192.0.2.1", 3, 1, 2)


async def test_usage_rows_merge(store: Store) -> None:
    rows = [
        usage_row("org_a", "2024-05-01"),
        usage_row("org_a", "2024-05-01", status=500),
        usage_row("org_a", "2024-05-02"),
        usage_row("org_a", "2024-05-04"),
        usage_row("org_b", "2024-05-01"),
    ]
    await store.add_usage(rows)
    await store.add_usage(rows[:1])
    await store.add_usage([])
    got = await store.usage("org_a", "2024-05-01", "2024-05-02")
    assert sorted(got, key=lambda r: (r.day, r.status)) == [
        replace(rows[0], requests=6, errors=2, paid_requests=4),
        rows[1],
        rows[2],
    ]
    assert await store.usage("org_a", "2024-06-01", "2024-06-30") == []


async def test_usage_and_errors_are_kept_per_environment(store: Store) -> None:
    live, test = usage_row("org_a", "2024-05-01"), replace(
        usage_row("org_a", "2024-05-01"), environment="test")  # fmt: skip
    await store.add_usage([live, test, test])
    assert await store.usage("org_a", "2024-05-01", "2024-05-01") == [live]
    assert await store.usage("org_a", "2024-05-01", "2024-05-01", "test") == [
        replace(test, requests=6, errors=2, paid_requests=4)]  # fmt: skip
    tested_error = replace(error_row("org_a", 2), environment="test")
    await store.add_errors([error_row("org_a", 1), tested_error], keep=100)
    assert [e.request_id for e in await store.errors_page("org_a", None, 10)] == ["req-1"]
    tested = await store.errors_page("org_a", None, 10, "test")
    assert [(e.request_id, e.environment) for e in tested] == [("req-2", "test")]


def error_row(org: str, n: int) -> ErrorRow:
    return ErrorRow(org, T0 + n, f"req-{n}", "GET", "contacts", 401, "bad_key", None, "192.0.2.1")


async def test_errors_page_newest_first(store: Store) -> None:
    await store.add_errors([error_row("org_a", n) for n in range(5)], keep=100)
    await store.add_errors([error_row("org_b", 9)], keep=100)
    await store.add_errors([error_row("org_a", n) for n in range(5, 7)], keep=100)
    first = await store.errors_page("org_a", None, 3)
    assert [e.request_id for e in first] == ["req-6", "req-5", "req-4"]
    assert first[0].seq > first[1].seq > first[2].seq > 0
    assert first[0] == replace(error_row("org_a", 6), seq=first[0].seq)
    rest = await store.errors_page("org_a", first[-1].seq, 10)
    assert [e.request_id for e in rest] == ["req-3", "req-2", "req-1", "req-0"]
    assert await store.errors_page("org_a", rest[-1].seq, 10) == []
    assert [e.request_id for e in await store.errors_page("org_b", None, 10)] == ["req-9"]


async def test_errors_keep_only_the_newest_across_orgs(store: Store) -> None:
    await store.add_errors([error_row("org_a", n) for n in range(3)], keep=4)
    await store.add_errors([error_row("org_b", n) for n in range(3, 5)], keep=4)
    a = [e.request_id for e in await store.errors_page("org_a", None, 10)]
    b = [e.request_id for e in await store.errors_page("org_b", None, 10)]
    assert (a, b) == (["req-2", "req-1"], ["req-4", "req-3"])
    await store.add_errors([error_row("org_a", 5)], keep=2)
    assert [e.request_id for e in await store.errors_page("org_a", None, 10)] == ["req-5"]
    assert [e.request_id for e in await store.errors_page("org_b", None, 10)] == ["req-4"]


# --- people --------------------------------------------------------------------------------


async def test_users_are_found_by_lower_cased_email(store: Store) -> None:
    ada = await new_user(store, "ada@example.com")
    assert await store.find_user("Ada@Example.COM") == (ada, "argon2-hash-of-ada@example.com")
    assert await store.find_user("bob@example.com") is None
    with pytest.raises(Conflict):
        await store.create_user(User("user_other", "ada@example.com", T0), "h")


async def test_membership_upsert_changes_role(store: Store) -> None:
    user = await new_user(store)
    zeta, acme = await new_org(store, "zeta"), await new_org(store, "acme")
    await store.set_membership(user.id, zeta.id, "member", T0)
    await store.set_membership(user.id, acme.id, "admin", T0)
    await store.set_membership(user.id, zeta.id, "owner", T0 + 1)
    got = [(m.org, m.role) for m in await store.memberships(user.id)]
    assert got == [(acme, "admin"), (zeta, "owner")]
    assert await store.memberships("user_nobody") == []


# --- OAuth clients -------------------------------------------------------------------------


async def test_client_round_trip(store: Store) -> None:
    org = await new_org(store)
    confidential = await new_client(
        store,
        "client_b",
        org,
        grant_types=("client_credentials",),
        org_id=org.id,
        allow_user_auth=True,
    )
    public = OAuthClient(
        id="client_a",
        name="native",
        public=True,
        redirect_uris=("com.example.app:/cb",),
        allowed_scopes=("contacts:read",),
        grant_types=("authorization_code",),
        created_at=T0 + 1,
    )
    await store.insert_client(public, None)
    got = await store.get_client(confidential.id)
    assert got is not None
    assert (got.client, got.secret_digest) == (confidential, digest(confidential.id))
    got = await store.get_client(public.id)
    assert got is not None and (got.client, got.secret_digest) == (public, None)
    assert await store.get_client("client_nope") is None
    assert await store.list_clients() == [confidential, public]
    with pytest.raises(Conflict):
        await store.insert_client(public, None)


async def test_clients_paged_by_owner(store: Store) -> None:
    acme, other = await new_org(store, "acme"), await new_org(store, "other")
    for client_id in ("client_c", "client_a", "client_b"):
        await new_client(store, client_id, acme)
    await new_client(store, "client_0", other)
    await new_client(store, "client_1")  # registered by an operator: no owner
    first = await store.list_clients_page(acme.id, None, 2)
    assert [c.id for c in first] == ["client_a", "client_b"]
    assert [c.id for c in await store.list_clients_page(acme.id, first[-1].id, 2)] == ["client_c"]
    assert await store.list_clients_page(acme.id, "client_c", 2) == []
    assert [c.id for c in await store.list_clients_page(other.id, None, 10)] == ["client_0"]


async def test_update_client_and_set_secret(store: Store) -> None:
    client = await new_client(store, "client_a")
    changed = replace(
        client, name="renamed", redirect_uris=("https://new.example/cb",), allowed_scopes=("x",)
    )
    await store.update_client(changed)
    await store.set_client_secret(client.id, digest("second secret"))
    got = await store.get_client(client.id)
    assert got is not None and (got.client, got.secret_digest) == (
        changed,
        digest("second secret"),
    )


async def test_disable_client_revokes_its_tokens(store: Store) -> None:
    consent = await new_consent(store)
    other_client = await new_client(store, "client_z", consent.org)
    mine = [make_token(consent, "tok_1", "access"), make_token(consent, "tok_2")]
    theirs = replace(make_token(consent, "tok_3"), client_id=other_client.id, family_id="fam_z")
    await insert_tokens(store, *mine, theirs)
    before = await newest_event(store)
    assert await store.disable_client(consent.client.id, T0 + 5) is True
    assert await store.disable_client(consent.client.id, T0 + 6) is False
    assert await store.disable_client("client_nope", T0 + 6) is False
    got = await store.get_client(consent.client.id)
    assert got is not None and got.client.disabled_at == T0 + 5
    assert [(await token(store, t.id)).revoked_at for t in mine] == [T0 + 5, T0 + 5]
    assert (await token(store, theirs.id)).revoked_at is None
    assert sorted(await events_after(store, before)) == ["tok_1", "tok_2"]


async def test_delete_client_removes_grants_and_revokes_tokens(store: Store) -> None:
    consent = await new_consent(store)
    await insert_tokens(store, make_token(consent, "tok_1", "access"), make_token(consent, "tok_2"))
    before = await newest_event(store)
    assert await store.delete_client(consent.client.id, T0 + 5) is True
    assert await store.delete_client(consent.client.id, T0 + 6) is False
    assert await store.get_client(consent.client.id) is None
    assert await store.get_grant(consent.grant_id) is None
    assert await store.list_grants_page(consent.org.id, None, None, 10) == []
    assert (await token(store, "tok_1")).revoked_at == T0 + 5
    assert (await token(store, "tok_2")).revoked_at == T0 + 5
    assert sorted(await events_after(store, before)) == ["tok_1", "tok_2"]


# --- consents ------------------------------------------------------------------------------


async def test_upsert_grant_keeps_one_grant_per_user_org_client(store: Store) -> None:
    consent = await new_consent(store)
    org, user, client = consent.org, consent.user, consent.client
    assert consent.grant_id == "grant_a"
    again = await store.upsert_grant("grant_new", user.id, org.id, client.id, ("b", "c"), T0 + 9)
    assert again == "grant_a"
    grant = await store.get_grant("grant_a")
    assert grant is not None
    assert (grant.user_email, grant.client_name) == (user.email, client.name)
    assert (grant.scopes, grant.created_at, grant.updated_at) == (("b", "c"), T0, T0 + 9)
    assert await store.get_grant("grant_new") is None
    assert await store.get_grant("grant_nope") is None
    # Revoked, then approved again: the same grant comes back to life.
    await store.revoke_grant("grant_a", T0 + 10)
    revoked = await store.get_grant("grant_a")
    assert revoked is not None and revoked.revoked_at == T0 + 10
    assert await store.upsert_grant("grant_x", user.id, org.id, client.id, ("a",), T0 + 11) == (
        "grant_a"
    )
    back = await store.get_grant("grant_a")
    assert back is not None and back.revoked_at is None


async def test_grants_listed_by_org_and_by_user(store: Store) -> None:
    consent = await new_consent(store)
    org = consent.org
    bob = await new_user(store, "bob@example.com")
    other_org = await new_org(store, "other")
    app_b = await new_client(store, "client_b", org)
    await store.upsert_grant("grant_b", bob.id, org.id, app_b.id, ("a",), T0)
    await store.upsert_grant("grant_c", consent.user.id, org.id, app_b.id, ("a",), T0)
    await store.upsert_grant("grant_d", bob.id, other_org.id, app_b.id, ("a",), T0)
    await store.upsert_grant("grant_e", bob.id, org.id, consent.client.id, ("a",), T0)
    await store.revoke_grant("grant_e", T0 + 1)  # revoked grants are not listed

    async def ids(user_id: str | None, after: str | None, limit: int) -> list[str]:
        return [g.id for g in await store.list_grants_page(org.id, user_id, after, limit)]

    assert await ids(None, None, 10) == ["grant_a", "grant_b", "grant_c"]
    assert await ids(None, None, 2) == ["grant_a", "grant_b"]
    assert await ids(None, "grant_b", 2) == ["grant_c"]
    assert await ids(consent.user.id, None, 10) == ["grant_a", "grant_c"]
    assert await ids(bob.id, None, 10) == ["grant_b"]
    assert await ids(consent.user.id, "grant_a", 10) == ["grant_c"]


async def test_revoke_grant_revokes_its_tokens(store: Store) -> None:
    consent = await new_consent(store)
    app_b = await new_client(store, "client_b", consent.org)
    grant_b = await store.upsert_grant(
        "grant_b", consent.user.id, consent.org.id, app_b.id, ("a",), T0
    )
    under_a = [make_token(consent, "tok_1", "access"), make_token(consent, "tok_2")]
    under_b = replace(make_token(consent, "tok_3"), grant_id=grant_b, client_id=app_b.id)
    await insert_tokens(store, *under_a, under_b)
    before = await newest_event(store)
    await store.revoke_grant(consent.grant_id, T0 + 7)
    assert [(await token(store, t.id)).revoked_at for t in under_a] == [T0 + 7, T0 + 7]
    assert (await token(store, under_b.id)).revoked_at is None
    assert sorted(await events_after(store, before)) == ["tok_1", "tok_2"]


# --- codes and tokens ----------------------------------------------------------------------


async def test_consume_code_once(store: Store) -> None:
    consent = await new_consent(store)
    code = make_code(consent)
    await store.insert_code(code, digest("code"))
    first = await store.consume_code(digest("code"), T0 + 1)
    assert first is not None and first.fresh is True
    assert first.code == replace(code, used_at=T0 + 1)
    replay = await store.consume_code(digest("code"), T0 + 2)
    assert replay is not None and replay.fresh is False
    assert replay.code == replace(code, used_at=T0 + 1)
    assert await store.consume_code(digest("no such code"), T0 + 3) is None
    with pytest.raises(Conflict):
        await store.insert_code(replace(code, id="code_b"), digest("code"))


async def test_concurrent_code_redemptions_have_one_winner(store: Store) -> None:
    consent = await new_consent(store)
    await store.insert_code(make_code(consent), digest("code"))
    results = await asyncio.gather(*(store.consume_code(digest("code"), T0 + n) for n in range(10)))
    assert all(r is not None for r in results)
    fresh = [r for r in results if r is not None and r.fresh]
    assert len(fresh) == 1
    assert {r.code.used_at for r in results if r is not None} == {fresh[0].code.used_at}


async def test_tokens_are_found_by_digest(store: Store) -> None:
    consent = await new_consent(store)
    access = make_token(consent, "tok_1", "access")
    client_token = replace(
        make_token(consent, "tok_2", "access", "fam_cc"), user_id=None, grant_id=None
    )
    await insert_tokens(store, access, client_token)
    assert await store.find_token(digest("tok_1")) == access
    assert await store.find_token(digest("tok_2")) == client_token
    assert await store.find_token(digest("tok_nope")) is None


async def test_token_digest_is_unique(store: Store) -> None:
    consent = await new_consent(store)
    await insert_tokens(store, make_token(consent, "tok_1"))
    with pytest.raises(Conflict):
        await store.insert_tokens([(make_token(consent, "tok_2"), digest("tok_1"))])


async def test_consume_refresh_token_once(store: Store) -> None:
    consent = await new_consent(store)
    refresh, access = make_token(consent, "tok_r"), make_token(consent, "tok_a", "access")
    await insert_tokens(store, refresh, access)
    first = await store.consume_refresh_token(digest("tok_r"), T0 + 1)
    assert first is not None and first.fresh is True
    assert first.token == replace(refresh, used_at=T0 + 1)
    replay = await store.consume_refresh_token(digest("tok_r"), T0 + 2)
    assert replay is not None and replay.fresh is False
    assert replay.token.used_at == T0 + 1
    assert await store.consume_refresh_token(digest("tok_a"), T0 + 3) is None  # not a refresh
    assert (await token(store, "tok_a")).used_at is None
    assert await store.consume_refresh_token(digest("tok_nope"), T0 + 3) is None


async def test_concurrent_refreshes_have_one_winner(store: Store) -> None:
    consent = await new_consent(store)
    await insert_tokens(store, make_token(consent, "tok_r"))
    results = await asyncio.gather(
        *(store.consume_refresh_token(digest("tok_r"), T0 + n) for n in range(10))
    )
    assert all(r is not None for r in results)
    fresh = [r for r in results if r is not None and r.fresh]
    assert len(fresh) == 1
    assert (await token(store, "tok_r")).used_at == fresh[0].token.used_at


async def test_revoke_token(store: Store) -> None:
    consent = await new_consent(store)
    await insert_tokens(store, make_token(consent, "tok_1"), make_token(consent, "tok_2"))
    before = await newest_event(store)
    await store.revoke_token("tok_1", T0 + 3)
    await store.revoke_token("tok_1", T0 + 4)  # already revoked: no change, no event
    await store.revoke_token("tok_nope", T0 + 4)
    assert (await token(store, "tok_1")).revoked_at == T0 + 3
    assert not (await token(store, "tok_1")).active_at(T0 + 3)
    assert (await token(store, "tok_2")).revoked_at is None
    assert await events_after(store, before) == ["tok_1"]


async def test_revoke_family_revokes_only_that_family(store: Store) -> None:
    consent = await new_consent(store)
    family = [make_token(consent, f"tok_{n}", "access" if n % 2 else "refresh") for n in range(4)]
    stranger = make_token(consent, "tok_x", family="fam_b")
    await insert_tokens(store, *family, stranger)
    await store.revoke_token("tok_0", T0 + 1)
    before = await newest_event(store)
    await store.revoke_family("fam_a", T0 + 2)
    await store.revoke_family("fam_a", T0 + 3)
    await store.revoke_family("fam_nope", T0 + 3)
    revoked = [(await token(store, t.id)).revoked_at for t in family]
    assert revoked == [T0 + 1, T0 + 2, T0 + 2, T0 + 2]
    assert (await token(store, stranger.id)).revoked_at is None
    assert sorted(await events_after(store, before)) == ["tok_1", "tok_2", "tok_3"]


# --- wallets -------------------------------------------------------------------------------


async def debit(
    store: Store,
    org: Org,
    credential_id: str,
    cost: int = 1,
    idempotency_key: str | None = None,
    *,
    request_id: str = "req",
    fingerprint: str = FINGERPRINT,
    holder: str = "node-a/0/100",
    at: float = T0,
) -> Debit:
    """Charge as the gateway does: a fingerprint only with an idempotency key."""
    return await store.wallet_debit(
        org.id,
        credential_id,
        cost,
        request_id=request_id,
        route="paid",
        idempotency_key=idempotency_key,
        fingerprint=fingerprint if idempotency_key is not None else None,
        holder=holder,
        at=at,
    )


KEPT = KeptAnswer(
    body_digest="d" * 64,
    status=201,
    reason="Created",
    headers=[("Content-Type", "text/csv"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
    body=b"\x00\xffid,name\r\n",  # any bytes
)


async def test_a_kept_answer_is_returned_as_it_was_kept(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    await store.wallet_credit(org.id, 20, None, T0)
    for n, kept in enumerate([KEPT, KeptAnswer(None, 200, "", [], None)]):
        first = await debit(store, org, key.id, 1, f"idem-{n}")
        assert first.seq is not None
        await store.wallet_settle(first.seq, kept, T0)
        assert await debit(store, org, key.id, 1, f"idem-{n}", at=T0 + 1) == Debit(None, kept=kept)
    # Copies older than the window are dropped as others are kept; a debit whose copy
    # is gone (or that was settled before answers were kept) has nothing to replay.
    old = await debit(store, org, key.id, 1, "idem-old", at=T0 + 10)
    later = await debit(store, org, key.id, 1, "idem-later", at=T0 + 10)
    assert old.seq is not None and later.seq is not None
    await store.wallet_settle(old.seq, KEPT, T0)
    await store.wallet_settle(later.seq, KEPT, T0 + IDEMPOTENCY_WINDOW + 1)
    gone = KeptAnswer(body_digest=None, status=0, reason="", headers=[], body=None)
    retry = await debit(store, org, key.id, 1, "idem-old", at=T0 + IDEMPOTENCY_WINDOW + 5)
    assert retry == Debit(None, kept=gone)


async def charged(store: Store, org: Org, credential_id: str, cost: int = 1) -> int:
    result = await debit(store, org, credential_id, cost)
    assert result.refused is None and result.seq is not None, result
    return result.seq


async def paid_and_spent(store: Store, key_id: str) -> tuple[int, int]:
    key = await api_key(store, key_id)
    return key.paid_requests, key.spent


async def test_wallet_credit_and_balance(store: Store) -> None:
    org = await new_org(store)
    assert await store.wallet_balance(org.id) == 0
    assert await store.wallet_credit(org.id, 10, "welcome", T0) == 10
    assert await store.wallet_credit(org.id, 5, None, T0 + 1) == 15
    assert await store.wallet_balance(org.id) == 15
    assert await store.wallet_balance("org_nobody") == 0


async def test_each_environment_has_its_own_wallet(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_t")
    assert await store.wallet_credit(org.id, 10, None, T0) == 10
    assert await store.wallet_credit(org.id, 4, "free", T0, "test") == 4
    taken = await store.wallet_debit(org.id, key.id, 3, request_id="r", route="paid",
                                     idempotency_key=None, fingerprint=None, holder="h",
                                     at=T0, environment="test")  # fmt: skip
    assert taken.seq is not None
    assert (await store.wallet_balance(org.id), await store.wallet_balance(org.id, "test")) == (
        10, 1)  # fmt: skip
    await store.wallet_refund(taken.seq, T0 + 1)  # back to the wallet it came from
    assert (await store.wallet_balance(org.id), await store.wallet_balance(org.id, "test")) == (
        10, 4)  # fmt: skip
    tested = await store.wallet_entries(org.id, None, 10, "test")
    assert [(e.kind, e.amount) for e in tested] == [("refund", 3), ("debit", -3), ("credit", 4)]
    assert [e.kind for e in await store.wallet_entries(org.id, None, 10)] == ["credit"]


async def test_concurrent_debits_never_overdraw(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    await store.wallet_credit(org.id, 10, None, T0)
    results = await asyncio.gather(
        *(debit(store, org, key.id, request_id=f"req-{n}") for n in range(20))
    )
    assert sum(r.seq is not None and r.refused is None for r in results) == 10
    assert [r.refused for r in results if r.seq is None] == ["insufficient_funds"] * 10
    assert await store.wallet_balance(org.id) == 0
    assert await paid_and_spent(store, key.id) == (10, 10)
    debits = [e for e in await store.wallet_entries(org.id, None, 100) if e.kind == "debit"]
    assert sorted(e.balance_after for e in debits) == list(range(10))


async def test_unfunded_debit_counts_nothing(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a", max_paid_requests=5)
    assert await debit(store, org, key.id) == Debit(seq=None, refused="insufficient_funds")
    await store.wallet_credit(org.id, 2, None, T0)
    assert await debit(store, org, key.id, 3) == Debit(seq=None, refused="insufficient_funds")
    assert await store.wallet_balance(org.id) == 2
    assert await paid_and_spent(store, key.id) == (0, 0)
    assert [e.kind for e in await store.wallet_entries(org.id, None, 10)] == ["credit"]


async def test_retry_of_a_settled_call_is_not_charged_again(store: Store) -> None:
    org = await new_org(store)
    key, other = await new_key(store, org, "key_a"), await new_key(store, org, "key_b")
    await store.wallet_credit(org.id, 20, None, T0)
    first = await debit(store, org, key.id, 3, "idem-1")
    assert first.seq is not None and first.refused is None
    in_flight = Debit(seq=None, refused="idempotency_in_progress")
    assert await debit(store, org, key.id, 3, "idem-1", at=T0 + 1) == in_flight
    await store.wallet_settle(first.seq, KEPT, T0 + 1)
    assert await debit(store, org, key.id, 3, "idem-1", at=T0 + 2) == Debit(seq=None, kept=KEPT)
    reused = await debit(store, org, key.id, 3, "idem-1", fingerprint="other", at=T0 + 3)
    assert reused == Debit(seq=None, refused="idempotency_mismatch")
    assert await store.wallet_balance(org.id) == 17
    assert await paid_and_spent(store, key.id) == (1, 3)
    assert [e.kind for e in await store.wallet_entries(org.id, None, 10)] == ["debit", "credit"]
    # The key is the credential's own: another key sending the same header pays.
    second = await debit(store, org, other.id, 3, "idem-1")
    assert second.seq is not None and second.refused is None
    assert await store.wallet_balance(org.id) == 14


async def test_idempotency_key_is_forgotten_after_its_window(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    await store.wallet_credit(org.id, 20, None, T0)
    first = await debit(store, org, key.id, 3, "idem-1")
    assert first.seq is not None
    await store.wallet_settle(first.seq, KEPT, T0)
    assert await debit(store, org, key.id, 3, "idem-1", at=T0 + IDEMPOTENCY_WINDOW - 1) == (
        Debit(seq=None, kept=KEPT)
    )
    later = await debit(store, org, key.id, 3, "idem-1", at=T0 + IDEMPOTENCY_WINDOW + 1)
    assert later.seq is not None and later.refused is None and later.seq != first.seq
    assert await store.wallet_balance(org.id) == 14
    assert await paid_and_spent(store, key.id) == (2, 6)


async def test_concurrent_retries_with_one_idempotency_key_are_charged_once(
    store: Store,
) -> None:
    """Two nodes may see the same retry at once; a race is a matter of timing, so
    several rounds of simultaneous retries are run, each with its own key."""
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    rounds, retries, cost = 5, 8, 2
    in_flight = Debit(seq=None, refused="idempotency_in_progress")
    await store.wallet_credit(org.id, 100, None, T0)
    for n in range(1, rounds + 1):
        results = await asyncio.gather(
            *(debit(store, org, key.id, cost, f"idem-{n}") for _ in range(retries)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == [], f"round {n}"
        paid = [r for r in results if isinstance(r, Debit) and r.seq is not None]
        assert len(paid) == 1 and paid[0].refused is None, f"round {n}"
        assert [r for r in results if r is not paid[0]] == [in_flight] * (retries - 1)
        assert await store.wallet_balance(org.id) == 100 - n * cost
        assert await paid_and_spent(store, key.id) == (n, n * cost)


async def test_the_pending_debits_of_a_process_that_is_gone_are_refunded(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a")
    await store.wallet_credit(org.id, 100, None, T0)
    held = {
        holder: [await charged_by(store, org, key.id, holder) for _ in range(2)]
        for holder in ("node-a/0/100", "node-a/1/101", "node-ab/0/102", "node-b/0/103")
    }
    await store.wallet_settle(held["node-a/1/101"][0], KEPT, T0)  # settled: stays paid
    await store.wallet_settle(held["node-a/1/101"][1], None, T0)  # no answer kept, as well
    assert await store.wallet_balance(org.id) == 92
    assert await store.wallet_release("node-a/0/100", T0 + 1) == 2
    assert await store.wallet_balance(org.id) == 94
    assert await store.wallet_release("node-a/", T0 + 2) == 0  # not node-ab's
    assert await store.wallet_balance(org.id) == 94
    kinds = [e.kind for e in await store.wallet_entries(org.id, None, 100)]
    assert kinds.count("refund") == 2 and kinds.count("debit") == 8
    assert await paid_and_spent(store, key.id) == (6, 6)


async def charged_by(store: Store, org: Org, credential_id: str, holder: str) -> int:
    result = await debit(store, org, credential_id, 1, holder=holder)
    assert result.seq is not None, result
    return result.seq


async def test_refund_restores_balance_caps_and_idempotency_key(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a", max_paid_requests=1)
    await store.wallet_credit(org.id, 10, None, T0)
    first = await debit(store, org, key.id, 4, "idem-1")
    assert first.seq is not None
    assert await debit(store, org, key.id, 4) == Debit(seq=None, refused="max_paid_requests")
    await store.wallet_refund(first.seq, T0 + 1)
    assert await store.wallet_balance(org.id) == 10
    assert await paid_and_spent(store, key.id) == (0, 0)
    # The call failed, so its retry with the same key is charged (and the cap has room again).
    retry = await debit(store, org, key.id, 4, "idem-1", at=T0 + 2)
    assert retry.seq is not None and retry.refused is None and retry.seq != first.seq
    assert await store.wallet_balance(org.id) == 6
    assert await paid_and_spent(store, key.id) == (1, 4)


async def test_refund_of_what_is_not_a_debit_changes_nothing(store: Store) -> None:
    org = await new_org(store)
    await store.wallet_credit(org.id, 10, None, T0)
    (credit,) = await store.wallet_entries(org.id, None, 10)
    await store.wallet_refund(credit.seq, T0)
    await store.wallet_refund(credit.seq + 1000, T0)
    assert await store.wallet_balance(org.id) == 10
    assert await store.wallet_entries(org.id, None, 10) == [credit]


async def test_max_paid_requests_cap(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a", max_paid_requests=2)
    await store.wallet_credit(org.id, 100, None, T0)
    await charged(store, org, key.id)
    await charged(store, org, key.id)
    assert await debit(store, org, key.id) == Debit(seq=None, refused="max_paid_requests")
    assert await store.wallet_balance(org.id) == 98
    assert await paid_and_spent(store, key.id) == (2, 2)


async def test_max_spend_cap(store: Store) -> None:
    org = await new_org(store)
    key = await new_key(store, org, "key_a", max_spend=7)
    await store.wallet_credit(org.id, 100, None, T0)
    await charged(store, org, key.id, 3)
    await charged(store, org, key.id, 3)
    assert await debit(store, org, key.id, 3) == Debit(seq=None, refused="max_spend")
    await charged(store, org, key.id, 1)  # exactly up to the cap still fits
    assert await debit(store, org, key.id, 1) == Debit(seq=None, refused="max_spend")
    assert await store.wallet_balance(org.id) == 93
    assert await paid_and_spent(store, key.id) == (3, 7)


async def test_tokens_have_no_caps(store: Store) -> None:
    org = await new_org(store)
    await store.wallet_credit(org.id, 5, None, T0)
    for _ in range(5):
        await charged(store, org, "tok_access")
    assert await debit(store, org, "tok_access") == Debit(seq=None, refused="insufficient_funds")


async def test_wallet_entries_newest_first(store: Store) -> None:
    org, other = await new_org(store, "acme"), await new_org(store, "other")
    key = await new_key(store, org, "key_a")
    await store.wallet_credit(org.id, 10, "welcome", T0)
    await store.wallet_credit(other.id, 99, None, T0)
    paid = await charged(store, org, key.id, 4)
    await store.wallet_refund(paid, T0 + 2)
    await charged(store, org, key.id, 1)
    entries = await store.wallet_entries(org.id, None, 10)
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [
        ("debit", -1, 9),
        ("refund", 4, 10),
        ("debit", -4, 6),
        ("credit", 10, 10),
    ]
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)
    assert all(e.org_id == org.id for e in entries)
    debit_entry, credit_entry = entries[2], entries[3]
    assert (debit_entry.seq, debit_entry.credential_id, debit_entry.route) == (paid, key.id, "paid")
    assert (debit_entry.request_id, debit_entry.at) == ("req", T0)
    assert (credit_entry.note, credit_entry.at, credit_entry.credential_id) == ("welcome", T0, None)
    assert (entries[1].credential_id, entries[1].at) == (key.id, T0 + 2)
    assert await store.wallet_entries(org.id, None, 2) == entries[:2]
    assert await store.wallet_entries(org.id, entries[1].seq, 10) == entries[2:]
    assert await store.wallet_entries(org.id, entries[-1].seq, 10) == []


async def test_sessions_end_one_by_one_or_all_of_a_user(store: Store) -> None:
    await store.start_session("s1", "u1", T0)
    await store.start_session("s2", "u1", T0)
    await store.start_session("s3", "u2", T0)
    assert [await store.session_live(s) for s in ("s1", "s2", "s3", "nope")] == [
        True, True, True, False,
    ]  # fmt: skip
    await store.end_session("s1", T0 + 1)
    assert not await store.session_live("s1") and await store.session_live("s2")
    await store.end_user_sessions("u1", T0 + 2)
    assert not await store.session_live("s2") and await store.session_live("s3")


async def test_a_consent_request_is_answered_once_even_at_the_same_moment(store: Store) -> None:
    answers = await asyncio.gather(*(store.answer_consent("r1", T0, T0 - 60) for _ in range(5)))
    assert sorted(answers) == [False, False, False, False, True]
    assert await store.answer_consent("r1", T0 + 1000, T0 + 999)  # forgotten, so new again


# --- events and their deliveries -------------------------------------------------------------


async def subscribed(store: Store, org: Org, events: tuple[str, ...] = ("key.created",)) -> str:
    sub = Subscription(id=f"sub_{len(events)}_{org.id}", org_id=org.id, environment="live",
                       url="https://hooks.example.com/in", events=events, description="",
                       secret="whsec_c2VjcmV0", created_at=T0)  # fmt: skip
    await store.insert_subscription(sub)
    return sub.id


def an_event(org: Org, n: int, kind: str = "key.created", once: str | None = None) -> Event:
    return Event(id=f"evt_{n}", org_id=org.id, environment="live", type=kind, data="{}",
                 at=T0 + n, once=once)  # fmt: skip


async def test_an_event_is_recorded_once_with_a_callback_per_wanting_subscription(
    store: Store,
) -> None:
    org = await new_org(store)
    wants = await subscribed(store, org)
    await subscribed(store, org, ("wallet.low", "key.revoked"))  # wants something else
    assert await store.add_event(an_event(org, 1, once="key.expiring:k:7d"))
    assert not await store.add_event(an_event(org, 2, once="key.expiring:k:7d"))
    (callback,) = await store.callbacks_page(org.id, "live", None, 10)
    assert (callback.subscription_id, callback.event_id, callback.status) == (
        wants, "evt_1", "pending")  # fmt: skip
    assert [e.id for e in await store.events_page(org.id, "live", None, 10)] == ["evt_1"]
    assert await store.events_page(org.id, "test", None, 10) == []


async def test_concurrent_claims_never_share_a_callback(store: Store) -> None:
    org = await new_org(store)
    await subscribed(store, org)
    for n in range(20):
        await store.add_event(an_event(org, n))
    now = T0 + 100
    first, second = await asyncio.gather(store.claim_callbacks(now, 30, 15),
                                         store.claim_callbacks(now, 30, 15))  # fmt: skip
    ids = [c.id for c, _, _ in first] + [c.id for c, _, _ in second]
    assert len(ids) == len(set(ids)) == 20
    assert await store.claim_callbacks(now + 1, 30, 50) == []  # claimed for 30 s
    assert len(await store.claim_callbacks(now + 31, 30, 50)) == 20  # a dead node's, again


async def test_a_failed_attempt_is_retried_and_five_days_of_failures_disable(
    store: Store,
) -> None:
    org = await new_org(store)
    sub_id = await subscribed(store, org)
    await store.add_event(an_event(org, 1))
    ((callback, _, _),) = await store.claim_callbacks(T0 + 10, 30, 10)
    await store.finish_callback(callback, Outcome(500, "HTTP 500", 3.0, T0 + 10), T0 + 15)
    assert await store.claim_callbacks(T0 + 12, 30, 10) == []  # not due yet
    ((again, _, _),) = await store.claim_callbacks(T0 + 16, 30, 10)
    assert again.attempt == 2
    sub = await store.get_subscription(sub_id)
    assert sub is not None and sub.failing_since == T0 + 10 and sub.disabled_at is None
    five_days = T0 + 10 + 5 * 86400
    await store.finish_callback(again, Outcome(None, "timeout", 10.0, five_days), None)
    sub = await store.get_subscription(sub_id)
    assert sub is not None and sub.disabled_at == five_days
    log = await store.callbacks_page(org.id, "live", None, 10, status="failed")
    assert [(c.attempt, c.http_status, c.error) for c in log] == [
        (2, None, "timeout"), (1, 500, "HTTP 500")]  # fmt: skip
    assert log[1].next_retry_at == T0 + 15 and log[0].next_retry_at is None
