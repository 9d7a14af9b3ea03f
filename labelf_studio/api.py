"""The /v2 API object and its conventions: error envelope, auth, rate limits, pagination.

`ApiConventionsMiddleware` applies the rules that hold for every /v2 path, including unknown
paths and methods, before any handler runs: body size (413), content type (415), JSON syntax
(400 MALFORMED_JSON), API key (401), rate limit (429) and the rate-limit headers; and it turns
anything that escapes a handler into the contract's 500 body. Handlers then only deal with
their own validation, through `ApiError` and the schema validation handler below.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

from labelf_studio.ratelimit import check_rate_limit
from labelf_studio.workspaces.models import role_at_least

logger = logging.getLogger("labelf.api")

API_PREFIX = "/v2/"
# Served without a key: the schema and the interactive docs (and their static files).
PUBLIC_PATHS = {"/v2/openapi.json", "/v2/docs"}
# Paths that accept multipart/form-data besides JSON (file uploads).
MULTIPART_PATHS = {"/v2/datasets"}


class ApiError(Exception):
    """An error the API answers with the contract's body."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def not_found(what: str = "Resource") -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found")


def invalid_field(message: str) -> ApiError:
    return ApiError(400, "INVALID_FIELD", message)


def error_response(request: HttpRequest, status: int, error_code: str, message: str) -> JsonResponse:
    request_id = getattr(request, "request_id", None)
    if request_id is None:
        from labelf_studio.middleware import new_request_id

        request_id = request.request_id = new_request_id()
    return JsonResponse(
        {"status": status, "message": message, "error_code": error_code, "request_id": request_id}, status=status
    )


class ErrorOut(Schema):
    status: int
    message: str
    error_code: str
    request_id: str


class ApiKeyAuth(HttpBearer):
    """Declares bearer auth in the schema; the key was already resolved by the middleware."""

    def __call__(self, request):
        return getattr(request, "api_key", None) or None

    def authenticate(self, request, token):  # pragma: no cover - __call__ short-circuits
        return getattr(request, "api_key", None)


api = NinjaAPI(
    title="Labelf Studio API",
    version="2.0",
    urls_namespace="v2",
    auth=ApiKeyAuth(),
    docs_url="/docs",
    openapi_url="/openapi.json",
    description="Labelf Studio's /v2 JSON API. Authenticate with `Authorization: Bearer <api key>`.",
)


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    response = error_response(request, exc.status, exc.error_code, exc.message)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def _field_name(loc: Iterable[Any]) -> str:
    # ninja prefixes body fields with ("body", "payload", ...): keep the part the client sent.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "file")]
    if parts and parts[0] in {"payload", "data", "params", "filters"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {"type": "value_error", "loc": (), "msg": "invalid"}
    field = _field_name(first.get("loc", ()))
    if first.get("type") == "missing":
        return error_response(request, 400, "MISSING_REQUIRED_FIELD", f"{field} field is required")
    message = first.get("msg", "invalid value")
    return error_response(request, 400, "INVALID_FIELD", f"{field}: {message}")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error_response(request, 404, "NOT_FOUND", "Not found")


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return error_response(request, 401, "UNAUTHORIZED", "Missing or invalid API key")


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    if exc.status_code == 400:
        return error_response(request, 400, "MALFORMED_JSON", "Request body is not valid JSON")
    code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
        exc.status_code, "INVALID_FIELD"
    )
    return error_response(request, exc.status_code, code, str(exc))


@api.exception_handler(Exception)
def _unhandled(request, exc):
    logger.exception("unhandled API error", extra={"request_id": getattr(request, "request_id", None)})
    return error_response(request, 500, "INTERNAL_ERROR", "Internal error; retry with backoff and quote the request_id")


# --- helpers for handlers ---------------------------------------------------------------------

def require_role(request: HttpRequest, role: str) -> None:
    if not role_at_least(request.api_key.role, role):
        raise ApiError(403, "FORBIDDEN", f"This API key's role ({request.api_key.role}) may not do this; {role} required")


def json_body(request: HttpRequest) -> dict:
    """The parsed JSON object of the request (the middleware already checked its syntax)."""
    body = getattr(request, "json_body", None)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_FIELD", "body: expected a JSON object")
    return body


def pagination_params(request: HttpRequest) -> tuple[int, int]:
    def parse(name: str, default: int, low: int, high: int | None) -> int:
        raw = request.GET.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid_field(f"{name}: expected an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise invalid_field(f"{name}: must be {bound}")
        return value

    return parse("offset", 0, 0, None), parse("limit", 20, 1, 100)


def paginate(request: HttpRequest, queryset, serialize: Callable[[Any], dict]) -> dict:
    offset, limit = pagination_params(request)
    total = queryset.count()
    items = [serialize(obj) for obj in queryset[offset: offset + limit]]
    return {"data": items, "total": total, "offset": offset, "limit": limit, "has_more": offset + len(items) < total}


# --- the middleware ---------------------------------------------------------------------------

def _is_api_path(path: str) -> bool:
    return path == "/v2" or path.startswith(API_PREFIX)


class ApiConventionsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not _is_api_path(request.path):
            return self.get_response(request)
        try:
            response = self._handle(request)
        except ApiError as exc:
            response = error_response(request, exc.status, exc.error_code, exc.message)
            for name, value in exc.headers.items():
                response[name] = value
        except RequestDataTooBig:
            response = error_response(request, 413, "PAYLOAD_TOO_LARGE", "Request body is over the size limit")
        except Exception:
            logger.exception("unhandled error in API middleware")
            response = error_response(request, 500, "INTERNAL_ERROR", "Internal error; retry with backoff and quote the request_id")
        decision = getattr(request, "rate_decision", None)
        if decision is not None:
            response["X-RateLimit-Limit"] = str(decision.limit)
            response["X-RateLimit-Remaining"] = str(decision.remaining)
            response["X-RateLimit-Reset"] = str(decision.reset_at)
        return response

    def _handle(self, request):
        path = request.path
        if path in PUBLIC_PATHS:
            return self.get_response(request)

        self._check_body(request)
        request.api_key = self._authenticate(request)
        request.workspace = request.api_key.workspace
        self._rate_limit(request)
        try:
            return self._route(request)
        finally:
            # Every admitted request counts; inference counts its request in the same statement as
            # its texts (`usage_recorded`), so it costs no second write.
            if not getattr(request, "usage_recorded", False):
                from labelf_studio.workspaces.services import usage_record_request

                usage_record_request(api_key=request.api_key)

    def _route(self, request):
        path = request.path
        try:
            match = resolve(request.path_info)
        except Resolver404:
            raise ApiError(404, "NOT_FOUND", f"No such path: {path}") from None
        if match.url_name is None and not match.route:
            raise ApiError(404, "NOT_FOUND", f"No such path: {path}")

        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            response = self._as_contract_error(request, response)
        return response

    def _as_contract_error(self, request, response):
        """Django's own error responses (405 from routing, 500 from an exception it already turned
        into an HTML page, ...) in the contract's body; never an HTML page or a stack trace."""
        status = response.status_code
        if status == 405:
            allowed = response.get("Allow", "")
            converted = error_response(request, 405, "METHOD_NOT_ALLOWED",
                                       f"{request.method} is not allowed here" + (f"; allowed: {allowed}" if allowed else ""))
            if allowed:
                converted["Allow"] = allowed
            return converted
        if status >= 500:
            return error_response(request, 500, "INTERNAL_ERROR", "Internal error; retry with backoff and quote the request_id")
        code = {400: "INVALID_FIELD", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
                413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "RATE_LIMIT_EXCEEDED"}.get(status, "INVALID_FIELD")
        message = "Not found" if status == 404 else f"Request failed ({status})"
        return error_response(request, status, code, message)

    def _check_body(self, request) -> None:
        if request.method not in {"POST", "PUT", "PATCH", "DELETE"}:
            return
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        is_multipart = content_type == "multipart/form-data"
        limit = settings.LABELF["MAX_UPLOAD_BYTES"] if is_multipart else settings.LABELF["MAX_REQUEST_BYTES"]
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"Request body is {length} bytes; the limit is {limit} bytes")
        if is_multipart:
            if request.path.rstrip("/") not in MULTIPART_PATHS:
                raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "This endpoint accepts application/json only")
            return
        body = request.body if length or request.META.get("HTTP_TRANSFER_ENCODING") else b""
        if not body:
            request.json_body = None
            return
        if content_type != "application/json":
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be application/json, not {content_type or 'missing'}")
        try:
            request.json_body = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "MALFORMED_JSON", "Request body is not valid JSON") from None

    def _authenticate(self, request):
        from labelf_studio.workspaces.services import api_key_authenticate

        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "UNAUTHORIZED", "Missing or malformed API key: send Authorization: Bearer <api key>")
        api_key = api_key_authenticate(secret=token.strip())
        if api_key is None:
            raise ApiError(401, "UNAUTHORIZED", "Unknown or revoked API key")
        return api_key

    def _rate_limit(self, request) -> None:
        workspace = request.api_key.workspace
        decision = check_rate_limit(workspace.id, workspace.rate_limit_per_minute)
        request.rate_decision = decision
        if not decision.allowed:
            raise ApiError(
                429, "RATE_LIMIT_EXCEEDED",
                f"Rate limit of {decision.limit} requests per minute exceeded; retry after {decision.retry_after} s",
                headers={"Retry-After": str(decision.retry_after)},
            )
