"""Cross-cutting middleware for every response: request ids and security headers."""
import secrets

from django.conf import settings


def new_request_id() -> str:
    return f"req_{secrets.token_hex(6)}"


class RequestIdMiddleware:
    """Every response carries our own X-Request-ID; a client-sent one is never trusted as ours."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = new_request_id()
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


class SecurityHeadersMiddleware:
    """Content Security Policy without inline scripts; the rest comes from Django's own settings."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.setdefault("X-Content-Type-Options", "nosniff")
        return response
