"""Typed errors of threadloom, split by what the caller can do about them.

::

    ThreadloomError                 root: catch this to catch everything threadloom raises
    ├── ConfigError                 bad input; fix the call or the config and try again
    │   ├── GraphError              an invalid strategy graph (cycle, two sinks, unknown kind)
    │   ├── ModelNotFoundError      a model file that does not exist or cannot be loaded
    │   ├── ContextLengthError      a prompt that does not fit the model's context window
    │   ├── MissingDependencyError  an optional extra is not installed (also an ImportError)
    │   ├── DatasetUnavailableError a Hub dataset neither cached nor downloadable here
    │   ├── AuthenticationError     a server refused the credentials (HTTP 401/403)
    │   └── BadRequestError         a server rejected the request as invalid (other HTTP 4xx)
    ├── WorkerError                 a backend failed while generating
    │   ├── WorkerUnavailable       retryable: the backend is busy, starting or unreachable
    │   │   └── RateLimited         retryable after a pause the server asked for
    │   └── WorkerDead              fatal for that worker: it crashed or was closed
    ├── VerifierError               a verifier could not produce a score
    │   └── SandboxUnavailable      code cannot be isolated here; the message says how to
    │                               enable isolation (or opt in to the weaker guards)
    └── BudgetExhausted             a budget limit was reached (strategies catch it and
                                    return what they have, marked truncated)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ThreadloomError(Exception):
    """Root of every error threadloom raises on purpose."""


class ConfigError(ThreadloomError, ValueError):
    """The caller passed something invalid; the message says what and how to fix it."""


class GraphError(ConfigError):
    """A strategy graph failed validation."""


class ModelNotFoundError(ConfigError, FileNotFoundError):
    """A model file is missing or unreadable."""


class ContextLengthError(ConfigError):
    """A prompt plus its continuation does not fit the model's context window."""

    def __init__(self, message: str, *, prompt_tokens: int = 0, context_length: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class MissingDependencyError(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    @classmethod
    def for_extra(cls, package: str, extra: str, feature: str) -> MissingDependencyError:
        return cls(
            f"{feature} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'threadloom[{extra}]'"
        )


class DatasetUnavailableError(ConfigError):
    """A Hub dataset is not in the local cache and cannot be downloaded; the message says how
    to get it here."""


class AuthenticationError(ConfigError):
    """A server refused the credentials; set a valid API key."""


class BadRequestError(ConfigError):
    """A server rejected a request as invalid; retrying the same request will fail again."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class WorkerError(ThreadloomError):
    """A worker failed to produce a completion."""


class WorkerUnavailable(WorkerError):
    """The worker cannot serve right now; retrying, possibly elsewhere, may succeed."""


class RateLimited(WorkerUnavailable):
    """The server asked us to slow down."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkerDead(WorkerError):
    """The worker is gone (closed or crashed); send work to another worker."""


class VerifierError(ThreadloomError):
    """A verifier failed to score a candidate."""


class SandboxUnavailable(VerifierError):
    """Untrusted code cannot be isolated on this machine; the message says why and what to do."""


class BudgetExhausted(ThreadloomError):
    """A budget limit was reached before the work could start."""

    def __init__(self, limit: str) -> None:
        super().__init__(f"budget exhausted: {limit}")
        self.limit = limit


def describe_errors(exc: ValidationError) -> str:
    """Pydantic's errors as 'field.path: message' parts, one per problem."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
