"""The OpenAPI 3.1 document of the management API, built from the operations
table and the pydantic models (JSON Schema 2020-12, which OpenAPI 3.1 uses)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import __version__
from gateway.config import Settings
from gateway.manage.schemas import Problem

if TYPE_CHECKING:
    from gateway.manage import Operation

REF = "#/components/schemas/{model}"
PARAM = re.compile(r"\{(\w+)\}")
ERRORS = {
    "400": "Invalid input; `field` names what is wrong",
    "401": "No valid credential or session",
    "403": "Not allowed: missing gateway:admin, not an owner/admin, bad CSRF token, or address",
    "404": "No such resource in your organization",
    "413": "The request body is larger than the gateway accepts (64 KiB)",
    "429": "A rate limit or quota refused the request",
}


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }


def build(settings: Settings, operations: Iterable[Operation]) -> dict[str, Any]:
    ops = list(operations)
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for op in ops:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.ok[1] is not None:
            models.append((op.ok[1], "serialization"))
    _, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas = defs.get("$defs", {})
    restrict_scopes(schemas, sorted(settings.scopes))

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        status, model = op.ok
        ok: dict[str, Any] = {"description": "Success"}
        if model is not None:
            ok["content"] = {
                "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}
            }
        item: dict[str, Any] = {
            "operationId": operation_id(op.method, op.path),
            "summary": op.summary,
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in PARAM.findall(op.path)
            ]
            + [
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": q.description,
                    "schema": q.schema,
                }
                for q in op.query
            ],
            "responses": {str(status): ok, **{c: problem(d) for c, d in ERRORS.items()}},
        }
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
                },
            }
        paths.setdefault(settings.management.prefix + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gateway management API",
            "version": __version__,
            "description": "Manage your organization's API keys, OAuth apps and usage. "
            "Authenticate with a key or token carrying gateway:admin, or a dashboard session.",
        },
        "servers": [{"url": str(settings.public_url).rstrip("/")}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


def operation_id(method: str, path: str) -> str:
    words = [w for w in PARAM.sub(r"by_\1", path).strip("/").split("/") if w]
    return method.lower() + "_" + "_".join(words)


def restrict_scopes(schemas: dict[str, Any], catalog: list[str]) -> None:
    """Scope names in request bodies are the catalog's: say so in the schema."""
    for name in ("KeyCreate", "KeyPatch", "ClientCreate", "ClientPatch"):
        props = schemas.get(name, {}).get("properties", {})
        scopes = props.get("scopes")
        if scopes is None:
            continue
        for variant in scopes.get("anyOf", [scopes]):
            if variant.get("type") == "array":
                variant["items"] = {"type": "string", "enum": catalog}
