"""The sections of config.yaml for the gateway's own services: the OAuth server,
login sessions, the management API, the dashboard, plugins and token signing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gateway.config.sections import Strict, mount_path


class OAuthPaths(Strict):
    """Where the OAuth endpoints are mounted; they take precedence over routes."""

    authorize: str = "/oauth/authorize"
    token: str = "/oauth/token"  # noqa: S105 - a path, not a secret
    revoke: str = "/oauth/revoke"
    introspect: str = "/oauth/introspect"
    login: str = "/oauth/login"
    logout: str = "/oauth/logout"

    @field_validator("*")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/") or "?" in path or "#" in path or "{" in path:
            raise ValueError("expected an absolute path such as /oauth/token")
        return path


class Throttle(Strict):
    """Failed-login limits, in the `limits` library's notation ("5/15 minutes")."""

    per_account: str = "5/15 minutes"
    per_ip: str = "30/15 minutes"

    @field_validator("per_account", "per_ip")
    @classmethod
    def _parses(cls, text: str) -> str:
        from limits import parse

        try:
            parse(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a rate such as '5/15 minutes'") from None
        return text


class OAuth(Strict):
    paths: OAuthPaths = OAuthPaths()
    access_token_ttl: int = Field(3600, gt=0, description="seconds")
    refresh_token_ttl: int = Field(30 * 86400, gt=0, description="seconds")
    code_ttl: int = Field(60, gt=0, le=600, description="seconds")
    default_scopes: tuple[str, ...] = Field((), description="granted when scope is omitted")
    require_pkce: Literal["public", "all"] = "public"
    allow_admin_scope: bool = Field(False, description="let OAuth clients be granted gateway:admin")
    access_token_header: bool = Field(
        False, description="also accept the credential in an 'access_token:' header"
    )
    login_throttle: Throttle = Throttle()


class Session(Strict):
    secret: str | None = Field(
        None, description="32+ characters shared by every node; random per process when unset"
    )
    cookie_name: str = "gateway_session"
    max_age: int = Field(8 * 3600, gt=0, description="seconds a login lasts")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: str | None) -> str | None:
        if secret is not None and len(secret) < 32:
            raise ValueError("use at least 32 random characters")
        return secret


class Management(Strict):
    prefix: str = "/_gateway/v1"
    rotation_grace: float = Field(
        0, ge=0, le=30 * 86400, description="seconds a rotated key's old secret still works"
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        return mount_path(prefix)


class DashboardSettings(Strict):
    path: str = "/dashboard"
    product_name: str = Field(
        "Gateway", min_length=1, max_length=80,
        description="what people sign in to, on the login page and the dashboard",
    )  # fmt: skip

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return Management._prefix(path)


class Plugin(Strict):
    """A first-party plugin that gets client-credentials access without manual set-up."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    org: str = Field(min_length=1, description="organization id or name")
    scopes: tuple[str, ...] = Field(min_length=1)


class SigningKey(Strict):
    kid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    algorithm: Literal["RS256", "ES256"] = "RS256"
    private_key_file: str = Field(description="PEM file, relative to the config file's folder")


class Tokens(Strict):
    """Access token format: opaque (default) or JWT (RFC 9068) that upstreams can verify."""

    format: Literal["opaque", "jwt"] = "opaque"
    audience: str | None = Field(None, description="the JWT 'aud'; default: public_url")
    signing_keys: tuple[SigningKey, ...] = Field(
        (), description="the first signs; every one is published in the JWKS"
    )
