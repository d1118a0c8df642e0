"""The error tree: every error a client may see, each class with its HTTP status, its
stable ``error`` code (a metric label too) and its headers, and their one wire format
(``error_parts``), which the engine and aiohttp's middleware both render."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final


class ConfigError(Exception):
    """The configuration is invalid. Start-up only; never rendered to a client."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class GatewayError(Exception):
    """Base of every error a client may see: a JSON body ``{"error", "message"}``."""

    status: int = 500
    code: str = "internal_error"
    message: str = "Internal error."
    label: str | None = None  # for metrics and logs, where it says more than the code

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)

    def headers(self) -> Mapping[str, str]:
        return {}

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}

    @property
    def reason(self) -> str:
        """A bounded label for metrics and logs (defaults to the error code)."""
        return self.label or self.code


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    message = "The request is malformed."


class AuthError(GatewayError):
    """RFC 6750 §3: a missing or bad credential (401) or too little scope (403)."""


class Unauthorized(AuthError):
    """401 for a missing, unknown, revoked or expired credential: one body for every
    credential sent, so no caller can probe which keys exist (``why`` is its label)."""

    status = 401
    code = "unauthorized"
    message = "Invalid or unknown access token."
    MISSING = "No credential: send X-API-Key or Authorization: Bearer."

    def __init__(self, why: str = "invalid") -> None:
        super().__init__(self.MISSING if why == "missing" else None)
        self.label = why  # the metric's reason: "missing", "invalid", "expired", ...

    def headers(self) -> Mapping[str, str]:
        # RFC 6750 §3.1: no error attribute when the request carried no credential.
        if self.label == "missing":
            return {"WWW-Authenticate": 'Bearer realm="gateway"'}
        return {"WWW-Authenticate": 'Bearer realm="gateway", error="invalid_token"'}


class InsufficientScope(AuthError):
    status = 403
    code = "forbidden"
    label = "insufficient_scope"

    def __init__(self, scope: str, required: tuple[str, ...]) -> None:
        super().__init__(f"Scope '{scope}' is required.")
        self.required = required

    def headers(self) -> Mapping[str, str]:
        scopes = " ".join(self.required)
        return {"WWW-Authenticate": f'Bearer realm="gateway", error="insufficient_scope", '
                                    f'scope="{scopes}"'}  # fmt: skip


class EnvironmentUnavailable(GatewayError):
    """A credential on a route that does not serve its environment (test mode): it never
    reaches another environment's target."""

    status = 403

    def __init__(self, environment: str) -> None:
        self.code = f"{environment}_mode_unavailable"
        super().__init__(f"This route is not available to {environment}-mode credentials.")


class NoRoute(GatewayError):
    status = 404
    code = "not_found"
    message = "No route matches this path."


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"Method {method} is not allowed here.")
        self.allowed = allowed

    def headers(self) -> Mapping[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class MalformedRequest(BadRequest):
    """Bytes that are not an HTTP/1.1 request (RFC 9112): the connection closes after."""

    message = "The request is not valid HTTP."


class UpgradeRefused(BadRequest):
    """An ``Upgrade`` where none is served (RFC 9110 §7.8): never forwarded."""

    code = "upgrade_refused"
    message = "This route does not accept a protocol upgrade."


class HeadTooLarge(BadRequest):
    status = 431
    message = "The request headers are too large."


class RequestTimeout(BadRequest):
    """The request head did not arrive within ``proxy.header_timeout``."""

    status = 408
    code = "request_timeout"
    message = "The request head took too long to arrive."


class VersionNotSupported(GatewayError):
    """RFC 9110 §15.6.6: only HTTP/1.0 and HTTP/1.1 are served."""

    status = 505
    code = "http_version_not_supported"
    message = "Only HTTP/1.0 and HTTP/1.1 are supported."


class ExpectationFailed(GatewayError):
    status = 417
    code = "expectation_failed"
    message = "Only 'Expect: 100-continue' is supported."


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UpstreamError(GatewayError):
    """The upstream could not answer: 502 unreachable or broken, 504 too slow."""

    status = 502
    code = "bad_gateway"
    message = "The upstream service is unreachable."

    def __init__(self, upstream: str, kind: str, message: str | None = None) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.kind = kind


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "gateway_timeout"
    message = "The upstream service did not answer in time."


class ClientClosedRequest(GatewayError):
    """The client went away before its answer (nginx's 499): counted, never a 500."""

    status = 499
    code = "client_closed_request"
    message = "The client closed the connection."


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"
    message = "The gateway cannot verify credentials right now; try again shortly."

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": "1"}


class AddressNotAllowed(GatewayError):
    status = 403
    code = "forbidden"
    message = "This credential may not be used from your address."
    label = "ip_not_allowed"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"

    def __init__(self, limit: int, reset_in: int, scope: str) -> None:
        super().__init__(f"Rate limit of {limit} requests per minute exceeded for this {scope}.")
        self.limit = limit
        self.reset_in = reset_in

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.reset_in), "RateLimit-Limit": str(self.limit),
                "RateLimit-Remaining": "0", "RateLimit-Reset": str(self.reset_in)}  # fmt: skip


class QuotaExceeded(GatewayError):
    status = 429
    code = "quota_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(f"This credential has used all of its {limit} requests.")


class LimitsUnavailable(ServiceUnavailable):
    message = "Rate limits cannot be checked right now; try again shortly."
    label = "limits_unavailable"


class PaymentRequired(GatewayError):
    status = 402
    code = "payment_required"
    REFUSALS: Final = {
        "insufficient_funds": "The organization's wallet cannot pay for this call.",
        "max_paid_requests": "This key has used all of its paid requests.",
        "max_spend": "This key has reached its spending limit.",
    }

    def __init__(self, why: str) -> None:
        super().__init__(self.REFUSALS.get(why, "Payment required."))
        self.label = why


class IdempotencyKeyReused(GatewayError):
    """The IETF Idempotency-Key draft's answer to a key sent with another request."""

    status = 422
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used for a different request."


class IdempotentAnswerNotKept(GatewayError):
    """A retry of a paid call whose answer could not be kept to replay."""

    status = 422
    code = "idempotency_answer_not_kept"
    message = "The first call with this Idempotency-Key succeeded; its answer was too large."


class IdempotencyKeyInUse(GatewayError):
    status = 409
    code = "idempotency_key_in_use"
    message = "A request with this Idempotency-Key is still in progress."


class NotAnAdmin(AuthError):
    status = 403
    code = "forbidden"
    message = "Only an owner or admin of this organization may do this."


class BadCsrf(AuthError):
    status = 403
    code = "forbidden"
    message = "Send the session's CSRF token in the X-CSRF-Token header."


class SignInThrottled(GatewayError):
    """Too many password attempts for an account or an address (``oauth.login_throttle``)."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed attempts. Try again in {retry_after} seconds.")
        self.retry_after = retry_after

    def headers(self) -> Mapping[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SignInUnavailable(ServiceUnavailable):
    message = "Sign-in is unavailable right now; try again shortly."
    label = "sign_in_unavailable"


class OAuthError(GatewayError):
    """RFC 6749 §5.2: ``{"error", "error_description"}``, 400 unless said otherwise (at the
    authorization endpoint, redirect parameters once the redirect_uri is valid)."""

    status = 400
    code = "invalid_request"
    message = "The request is missing a parameter or is otherwise malformed."

    def body(self) -> dict[str, object]:
        return {"error": self.code, "error_description": self.message}


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    """§5.2: 401 with a WWW-Authenticate challenge for the scheme clients may use."""

    status = 401
    code = "invalid_client"
    message = "Client authentication failed."

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": 'Basic realm="gateway"'}


class InvalidGrant(OAuthError):
    code = "invalid_grant"
    message = "The grant is invalid, expired, revoked or was issued to another client."


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"
    message = "This client may not use this grant type."


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"
    message = "The grant type is not supported."


class InvalidScope(OAuthError):
    code = "invalid_scope"
    message = "The requested scope is invalid, unknown or exceeds what is allowed."


class AccessDenied(OAuthError):
    status = 403
    code = "access_denied"
    message = "The resource owner denied the request."


class UnsupportedResponseType(OAuthError):
    code = "unsupported_response_type"
    message = "Only response_type=code is supported."


class ApiError(GatewayError):
    """Errors of the management API: ``{"error", "message"}`` plus ``field`` for 400s."""


class ValidationFailed(ApiError):
    status = 400
    code = "validation_error"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field

    def body(self) -> dict[str, object]:
        return {**super().body(), "field": self.field}


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "No such resource in your organization."


class InternalError(GatewayError):
    """Any unexpected exception; the text of the original never reaches the client."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"Internal error. Quote request id {request_id} when reporting it.")


def error_parts(error: GatewayError, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
    """The fields and JSON body of an error answer: the one wire format, for the engine
    and for aiohttp's middleware alike."""
    headers = [
        *error.headers().items(),
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-Request-Id", request_id),
        ("Cache-Control", "no-store"),
    ]
    return headers, json.dumps(error.body()).encode()
