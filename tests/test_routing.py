"""Routing: the compiled route table, the config that builds it, and the choice a
running gateway makes (which route, hence which scopes; 404; 405)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientResponse
from conftest import Gateway

from gateway.config import Route, load_config, settings_from_dict
from gateway.errors import ConfigError
from gateway.pipeline.routes import RouteConflict, RouteTable

# --- the route table ----------------------------------------------------------


def route(path: str, *methods: str, name: str | None = None) -> Route:
    return Route(path=path, upstream="main", methods=methods or None, id=name)


def segments(path: str) -> tuple[str, ...]:
    return tuple(s for s in path.split("/") if s)


def matched(table: RouteTable, method: str, path: str) -> str | None:
    """The name of the route a request would be sent to, or None."""
    found = table.match(method, segments(path))
    return found.route.name if found else None


SPECIFICITY = [
    route("/**", name="everything"),
    route("/a/**", name="a/**"),
    route("/a/{x}", name="a/{x}"),
    route("/a/b", name="a/b"),
    route("/a/b/**", name="a/b/**"),
    route("/a/{x}/c", name="a/{x}/c"),
    route("/m", "GET", name="m GET"),
    route("/m", name="m any"),
    route("/h", "GET", name="h GET"),
    route("/h2", "GET", name="h2 GET"),
    route("/h2", "HEAD", name="h2 HEAD"),
]
SPECIFICITY_CASES = [
    ("GET", "/a/b", "a/b"),  # a literal beats a param and a glob
    ("GET", "/a/z", "a/{x}"),  # a param beats a glob
    ("GET", "/a/z/y", "a/**"),
    ("GET", "/a/z/c", "a/{x}/c"),  # longer beats shorter
    ("GET", "/a/b/c", "a/b/**"),  # decided from the left: literal 'b' beats '{x}'
    ("GET", "/a/b/c/d/e", "a/b/**"),
    ("GET", "/a", "a/**"),  # '/**' matches its own prefix
    ("GET", "/", "everything"),
    ("GET", "/zzz/yyy", "everything"),
    ("GET", "/m", "m GET"),  # a route listing the method beats one without methods
    ("POST", "/m", "m any"),
    ("HEAD", "/m", "m GET"),  # HEAD falls back to GET before the any-method route
    ("HEAD", "/h", "h GET"),
    ("POST", "/h", "everything"),  # the method-restricted route does not answer
    ("HEAD", "/h2", "h2 HEAD"),  # unless a route lists HEAD itself
    ("GET", "/h2", "h2 GET"),
]


@pytest.mark.parametrize(("method", "path", "expected"), SPECIFICITY_CASES)
def test_the_most_specific_route_wins(method: str, path: str, expected: str) -> None:
    assert matched(RouteTable(SPECIFICITY), method, path) == expected


def test_a_dead_end_literal_backtracks_to_a_param_route() -> None:
    table = RouteTable([route("/a/b/c", name="literal"), route("/{x}/b/d", name="param")])
    found = table.match("GET", segments("/a/b/d"))
    assert found is not None
    assert (found.route.name, found.params) == ("param", {"x": "a"})
    assert matched(table, "GET", "/a/b/c") == "literal"
    assert matched(table, "GET", "/a/b") is None
    assert matched(table, "GET", "/a/b/c/d") is None


def test_params_are_named_by_the_pattern() -> None:
    table = RouteTable([route("/orgs/{org}/users/{user}"), route("/orgs/{org}/**")])
    found = table.match("GET", ("orgs", "acme", "users", "ada"))
    assert found is not None and found.params == {"org": "acme", "user": "ada"}
    found = table.match("GET", ("orgs", "acme", "teams", "x"))
    assert found is not None and found.params == {"org": "acme"}


def test_routes_sharing_a_param_position_keep_their_own_names() -> None:
    table = RouteTable([route("/a/{x}", "GET"), route("/a/{y}", "POST")])
    got, posted = table.match("GET", ("a", "1")), table.match("POST", ("a", "1"))
    assert got is not None and got.params == {"x": "1"}
    assert posted is not None and posted.params == {"y": "1"}


TIES = {
    "same pattern, no methods": [route("/a"), route("/a")],
    "overlapping methods": [route("/a", "GET", "POST"), route("/a", "POST", "PUT")],
    "params with different names": [route("/a/{x}"), route("/a/{y}")],
    "params deeper": [route("/a/{x}/b", "GET"), route("/a/{y}/b", "GET")],
    "same glob": [route("/a/**"), route("/a/**")],
    "glob, overlapping methods": [route("/a/**", "GET"), route("/a/**", "PUT", "GET")],
}


@pytest.mark.parametrize("routes", list(TIES.values()), ids=list(TIES))
def test_ties_are_refused_naming_both_routes(routes: list[Route]) -> None:
    with pytest.raises(RouteConflict, match=r"^routes\[1\]: ties with routes\[0\]"):
        RouteTable(routes)


# Routes that share a pattern without tying: (routes, method -> route answering /a).
NOT_TIES: dict[str, tuple[list[Route], dict[str, str | None]]] = {
    "disjoint methods": (
        [route("/a", "GET", name="get"), route("/a", "POST", name="post")],
        {"GET": "get", "HEAD": "get", "POST": "post", "PUT": None},
    ),
    "GET and HEAD": (
        [route("/a", "GET", name="get"), route("/a", "HEAD", name="head")],
        {"GET": "get", "HEAD": "head", "POST": None},
    ),
    "methods and none": (
        [route("/a", "GET", name="get"), route("/a", name="any")],
        {"GET": "get", "HEAD": "get", "POST": "any"},
    ),
    "exact and glob": (
        [route("/a", "POST", name="exact"), route("/a/**", name="glob")],
        {"POST": "exact", "GET": "glob"},
    ),
}


@pytest.mark.parametrize(("routes", "expected"), list(NOT_TIES.values()), ids=list(NOT_TIES))
def test_routes_that_differ_do_not_tie(
    routes: list[Route], expected: dict[str, str | None]
) -> None:
    table = RouteTable(routes)
    assert {method: matched(table, method, "/a") for method in expected} == expected


def test_allowed_methods_collects_every_route_at_the_path() -> None:
    table = RouteTable(
        [
            route("/c", "GET", "HEAD"),
            route("/c/**", "POST", "PATCH", "DELETE"),
            route("/c/{id}", "GET"),
            route("/g", "GET"),
        ]
    )
    assert matched(table, "PUT", "/c") is None
    assert table.allowed_methods(segments("/c")) == ("DELETE", "GET", "HEAD", "PATCH", "POST")
    assert table.allowed_methods(segments("/c/1")) == ("DELETE", "GET", "HEAD", "PATCH", "POST")
    assert table.allowed_methods(segments("/c/1/2")) == ("DELETE", "PATCH", "POST")
    assert table.allowed_methods(segments("/g")) == ("GET", "HEAD")
    assert table.allowed_methods(segments("/nothing")) == ()


# --- configuration ------------------------------------------------------------


def valid_config() -> dict[str, Any]:
    return {
        "database": {"url": "sqlite:///gateway.db"},
        "scopes": {"contacts:read": "Read contacts", "contacts:write": "Change contacts"},
        "upstreams": {
            "main": {"url": "http://127.0.0.1:9001"},
            "my-api": {"url": "http://127.0.0.1:9002"},
        },
        "routes": [
            {
                "path": "/contacts",
                "methods": ["GET"],
                "scopes": ["contacts:read"],
                "upstream": "main",
            },
            {"path": "/contacts/**", "scopes": ["contacts:write"], "upstream": "main"},
            {"path": "/public/**", "auth": "none", "upstream": "my-api"},
        ],
    }


def write_config(tmp_path: Path, raw: dict[str, Any] | str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.problems


def test_a_valid_config_loads(tmp_path: Path) -> None:
    settings = load_config(write_config(tmp_path, valid_config()), environ={})
    assert [r.path for r in settings.routes] == ["/contacts", "/contacts/**", "/public/**"]
    assert settings.sqlite_path == tmp_path / "gateway.db"  # relative to the file's folder


Mutation = Callable[[dict[str, Any]], object]

# (change to a valid config, the problem it must produce after "<file>: ")
CONFIG_ERRORS: dict[str, tuple[Mutation, str]] = {
    "unknown top-level key": (lambda c: c.update(colour="blue"), "colour: "),
    "unknown route key": (lambda c: c["routes"][1].update(scope="x"), "routes[1].scope: "),
    "unknown upstream key": (
        lambda c: c["upstreams"]["main"].update(timout=3),
        "upstreams.main.timout: ",
    ),
    "unknown scope": (
        lambda c: c["routes"][1].update(scopes=["contacts:write", "contacts:wrte"]),
        "routes[1].scopes[1]: unknown scope 'contacts:wrte'",
    ),
    "unknown upstream": (
        lambda c: c["routes"][0].update(upstream="mian"),
        "routes[0].upstream: unknown upstream 'mian'",
    ),
    "tied routes": (
        lambda c: c["routes"].append({"path": "/contacts", "methods": ["GET"], "upstream": "main"}),
        "routes[3]: ties with routes[0]",
    ),
    "auth none with scopes": (
        lambda c: c["routes"][2].update(scopes=["contacts:read"]),
        "routes[2].scopes: a route with 'auth: none' cannot require scopes",
    ),
    "empty segment": (lambda c: c["routes"][0].update(path="/contacts//x"), "routes[0].path: "),
    "trailing slash": (lambda c: c["routes"][0].update(path="/contacts/"), "routes[0].path: "),
    "relative path": (lambda c: c["routes"][0].update(path="contacts"), "routes[0].path: "),
    "glob not last": (lambda c: c["routes"][0].update(path="/a/**/b"), "routes[0].path: "),
    "broken param": (lambda c: c["routes"][0].update(path="/a/{id"), "routes[0].path: "),
    "bad param name": (lambda c: c["routes"][0].update(path="/a/{1d}"), "routes[0].path: "),
    "wildcard literal": (lambda c: c["routes"][0].update(path="/a/b*"), "routes[0].path: "),
    "dot segment": (lambda c: c["routes"][0].update(path="/a/../b"), "routes[0].path: "),
    "no methods": (lambda c: c["routes"][0].update(methods=[]), "routes[0].methods: "),
    "duplicate id": (
        lambda c: [r.update(id="contacts") for r in c["routes"][:2]],
        "routes[1].id: 'contacts' is already used by routes[0]",
    ),
    "strip_prefix not a prefix": (
        lambda c: c["routes"][2].update(strip_prefix="/private"),
        "routes[2].strip_prefix: ",
    ),
    "method twice": (
        lambda c: c["routes"][0].update(methods=["GET", "get"]),
        "routes[0].methods: ",
    ),
    "bad upstream url": (
        lambda c: c["upstreams"]["my-api"].update(url="not a url"),
        "upstreams.my-api.url: ",
    ),
}


@pytest.mark.parametrize(
    ("change", "problem"), list(CONFIG_ERRORS.values()), ids=list(CONFIG_ERRORS)
)
def test_config_errors_name_the_file_and_the_key_path(
    tmp_path: Path, change: Mutation, problem: str
) -> None:
    raw = valid_config()
    change(raw)
    path = write_config(tmp_path, raw)
    problems = load_problems(path)
    assert all(p.startswith(f"{path}: ") for p in problems), problems
    assert any(p.startswith(f"{path}: {problem}") for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = valid_config()
    raw["routes"][0]["upstream"] = "mian"
    raw["routes"][1]["scopes"] = ["contacts:wrte"]
    problems = load_problems(write_config(tmp_path, raw))
    assert len(problems) == 2, problems
    assert "routes[0].upstream" in problems[0] and "routes[1].scopes[0]" in problems[1]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("routes: [\n  {path: /a\n", ":3:1: not valid YAML: expected ',' or '}'"),
        ("- just\n- a list\n", ": expected a mapping of keys at the top level"),
    ],
    ids=["bad yaml", "not a mapping"],
)
def test_unreadable_yaml_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write_config(tmp_path, text)
    problems = load_problems(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}{problem}"), problems


def test_a_misspelt_key_is_named_with_the_key_it_looks_like(tmp_path: Path) -> None:
    raw = valid_config()
    raw["logging"] = {"levle": "DEBUG"}
    raw["routes"][0]["scopse"] = []
    raw["colour"] = "red"
    problems = load_problems(write_config(tmp_path, raw))
    assert sorted(p.split(": ", 1)[1] for p in problems) == [
        "colour: unknown key",  # nothing like it
        "logging.levle: unknown key (did you mean 'level'?)",
        "routes[0].scopse: unknown key (did you mean 'scopes'?)",
    ]


def test_settings_from_dict_names_its_source() -> None:
    raw = valid_config()
    raw["routes"][0]["scopes"] = ["nope"]
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(raw, source="inline.yaml")
    assert caught.value.problems == ["inline.yaml: routes[0].scopes[0]: unknown scope 'nope'"]


def test_environment_overrides_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "sqlite:///from-os-environ.db")  # not passed
    environ = {
        "GATEWAY_DATABASE_URL": "sqlite:///elsewhere.db",
        "GATEWAY_UPSTREAM_MAIN_URL": "http://10.0.0.5:8000",
        "GATEWAY_UPSTREAM_MY_API_URL": "https://api.internal:8443/base",
        "GATEWAY_UPSTREAM_UNKNOWN_URL": "http://ignored",
        "GATEWAY_LISTEN_PORT": "8181",
    }
    settings = load_config(write_config(tmp_path, valid_config()), environ=environ)
    assert settings.database.url == "sqlite:///elsewhere.db"
    assert settings.sqlite_path == tmp_path / "elsewhere.db"
    main, my_api = settings.upstreams["main"].url, settings.upstreams["my-api"].url
    assert (main.scheme, main.host, main.port) == ("http", "10.0.0.5", 8000)
    assert (my_api.scheme, my_api.host, my_api.port, my_api.path) == (
        "https",
        "api.internal",
        8443,
        "/base",
    )
    assert settings.listen.port == 8181
    assert set(settings.upstreams) == {"main", "my-api"}


def test_a_bad_environment_value_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, valid_config())
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"GATEWAY_UPSTREAM_MAIN_URL": "not a url"})
    assert any(p.startswith(f"{path}: upstreams.main.url: ") for p in caught.value.problems)


# --- through a running gateway ------------------------------------------------


async def assert_error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code
    return body


async def test_the_most_specific_route_decides_the_scopes(
    gw: Gateway, upstream_seen: list[str]
) -> None:
    reader = {"X-API-Key": (await gw.mint(["contacts:read"])).secret}
    writer = {"X-API-Key": (await gw.mint(["contacts:write"])).secret}

    # POST /contacts: /contacts lists only GET and HEAD; /contacts/** matches its prefix.
    denied = await gw.client.post("/contacts", json={"name": "Ada"}, headers=reader)
    body = await assert_error(denied, 403, "forbidden")
    assert body["message"] == "Scope 'contacts:write' is required."
    created = await gw.client.post("/contacts", json={"name": "Ada"}, headers=writer)
    assert created.status == 201, await created.text()
    contact_id = (await created.json())["id"]

    # GET /contacts/{id} beats /contacts/**: it needs contacts:read, not contacts:write.
    body = await assert_error(
        await gw.client.get(f"/contacts/{contact_id}", headers=writer), 403, "forbidden"
    )
    assert body["message"] == "Scope 'contacts:read' is required."
    got = await gw.client.get(f"/contacts/{contact_id}", headers=reader)
    assert got.status == 200 and (await got.json())["name"] == "Ada"
    head = await gw.client.head(f"/contacts/{contact_id}", headers=reader)
    assert head.status == 200

    # DELETE is not listed by /contacts/{id}, so /contacts/** (contacts:write) answers it.
    body = await assert_error(
        await gw.client.delete(f"/contacts/{contact_id}", headers=reader), 403, "forbidden"
    )
    assert body["message"] == "Scope 'contacts:write' is required."

    item = f"/contacts/{contact_id}"
    assert upstream_seen == ["/contacts", item, item]


async def test_a_longer_literal_prefix_decides_the_scopes(
    gw: Gateway, upstream_seen: list[str]
) -> None:
    key = {"X-API-Key": (await gw.mint(["products:read"])).secret}
    echo = await gw.client.get("/echo/other/x", headers=key)
    assert echo.status == 200 and (await echo.json())["path"] == "/echo/other/x"
    await assert_error(await gw.client.get("/echo/scoped/x", headers=key), 403, "forbidden")
    await assert_error(await gw.client.get("/echo/scoped", headers=key), 403, "forbidden")
    assert upstream_seen == ["/echo/other/x"]


@pytest.mark.parametrize(
    "path", ["/products", "/Contacts", "/contactsx", "/public", "/public/echo2/x", "/"]
)
async def test_no_route_is_404_and_never_forwarded(
    gw: Gateway, upstream_seen: list[str], path: str
) -> None:
    key = await gw.mint(["contacts:read", "contacts:write", "products:read", "admin:all"])
    resp = await gw.client.get(path, headers={"X-API-Key": key.secret})
    await assert_error(resp, 404, "not_found")
    assert upstream_seen == []


@pytest.mark.parametrize("path", ["/contacts", "/contacts/abc"])
async def test_a_method_no_route_allows_is_405_with_allow(
    gw: Gateway, upstream_seen: list[str], path: str
) -> None:
    key = await gw.mint(["contacts:read", "contacts:write"])
    resp = await gw.client.put(path, json={}, headers={"X-API-Key": key.secret})
    await assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "DELETE, GET, HEAD, PATCH, POST"
    assert upstream_seen == []
