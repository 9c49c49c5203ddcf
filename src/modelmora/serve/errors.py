"""Failures that become HTTP responses. The app renders them per protocol (OpenAI or v2)."""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "DeadlineExceeded",
    "ModelNotFound",
    "ModelUnavailable",
    "PayloadTooLarge",
    "QueueFull",
    "ServeError",
    "Unauthorized",
]


class ServeError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServeError):
    status = 400
    code = "invalid_request"


class PayloadTooLarge(BadRequest):
    """More rows or longer texts than a request may hold (the message names the limit)."""

    status = 413
    code = "payload_too_large"


class Unauthorized(ServeError):
    status = 401
    code = "invalid_api_key"


class ModelNotFound(ServeError):
    status = 404
    code = "model_not_found"


class QueueFull(ServeError):
    status = 429
    code = "queue_full"


class ModelUnavailable(ServeError):
    """The worker crashed, failed to load, or was stopped while the request was in it."""

    status = 503
    code = "model_unavailable"


class DeadlineExceeded(ServeError):
    status = 504
    code = "deadline_exceeded"
