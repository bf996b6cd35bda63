"""Errors the server answers with, in OpenAI's shape: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from threadloom.errors import (
    BadRequestError,
    ConfigError,
    RateLimited,
    ThreadloomError,
    WorkerUnavailable,
)


class ApiError(Exception):
    """An HTTP error answer.

    Args:
        status: HTTP status code.
        message: What was wrong and how to fix it.
        type: OpenAI's error type ("invalid_request_error", "rate_limit_error", ...).
        param: The request field at fault, if one is.
        code: A machine-readable code ("model_not_found", "invalid_api_key", ...).
        retry_after_s: Sent as `Retry-After` (429 and 503).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def from_validation(exc: ValidationError) -> ApiError:
    """A 400 naming the first bad field of a request body."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ApiError(400, f"{param}: {message}{suffix}" if param else message, param=param)


def from_threadloom(exc: ThreadloomError, *, param: str | None = None) -> ApiError:
    """The answer for a typed error raised while preparing or running a request."""
    if isinstance(exc, RateLimited):
        return ApiError(
            429, f"the model backend is rate limited: {exc}", type="rate_limit_error",
            retry_after_s=exc.retry_after_s or 1.0,
        )
    if isinstance(exc, WorkerUnavailable):
        return ApiError(
            503, f"the model backend is unavailable: {exc}", type="server_error",
            retry_after_s=1.0,
        )
    if isinstance(exc, (ConfigError, BadRequestError)):
        return ApiError(400, str(exc), param=param)
    return ApiError(500, f"the run failed: {type(exc).__name__}: {exc}", type="server_error")
