"""Errors of the example backend and the one middleware that renders them.

Every failure a client sees is JSON ``{"error": code, "message": text}``:
handlers raise an :class:`ApiError`; aiohttp's own HTTP exceptions (unknown
route, wrong method, body over ``client_max_size``) and malformed framing are
turned into the same shape here, so no input produces a text/plain page.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error a client may see; each subclass owns status and code."""

    status: int = 400
    code: str = "bad_request"
    message: str = "The request is malformed."

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


class MissingOrg(ApiError):
    code = "missing_org"
    message = "X-Org-Id header is required."


class AmbiguousOrg(ApiError):
    code = "ambiguous_org"
    message = "Exactly one X-Org-Id header is allowed."


class InvalidJson(ApiError):
    code = "invalid_json"
    message = "The body is not valid UTF-8 JSON."


class InvalidMultipart(ApiError):
    code = "invalid_multipart"
    message = "The body is not valid multipart/form-data."


class InvalidParameter(ApiError):
    """A path or query parameter that cannot be parsed or is out of range."""

    code = "invalid_parameter"


class ValidationError(ApiError):
    """A well-formed body whose content is wrong; the message names the field."""

    status = 422
    code = "validation_error"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


class InvalidCsv(ApiError):
    status = 422
    code = "invalid_csv"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "No such resource."


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


# Codes for the aiohttp exceptions we expect, so they do not depend on the
# Python version's reason phrase (413 was renamed in 3.13).
_HTTP_EXCEPTION_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}

# Headers of an aiohttp exception that describe its text body, not the error.
_BODY_HEADERS = frozenset({hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _render_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_EXCEPTION_CODES.get(exc.status)
    if code is None:
        code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = {k: v for k, v in exc.headers.items() if k not in _BODY_HEADERS}
    return error_response(exc.status, code, f"{exc.reason}.", headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as JSON; an unexpected one as a bare 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _render_http_exception(exc)
    except HttpProcessingError:
        # Broken framing of the request body (bad chunking, multipart headers).
        return error_response(400, "bad_request", ApiError.message)
    except Exception as exc:
        # A vanished client gets no answer; once a streamed response has
        # started, another one cannot be sent.
        if isinstance(exc, ConnectionError) or request.writer.output_size > 0:
            raise
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal error.")
