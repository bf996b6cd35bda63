"""The server's settings: limits, security and what it serves."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from threadloom.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeConfig(BaseModel):
    """How `threadloom serve` behaves; every limit has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs an API key."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0: any free port)."""
    api_key: str | None = None
    """Clients must send `Authorization: Bearer <key>`; None: no key (loopback only)."""
    model_name: str | None = None
    """Name of the underlying model in `/v1/models` and after '@' in model ids (default: the
    worker's own model name)."""
    graph_dir: Path | None = None
    """Folder of YAML/JSON plans served as named graphs (the file stem is the model id)."""
    max_concurrent_runs: int = Field(16, ge=1)
    """Runs executing at once; later requests wait in a queue."""
    max_queued_runs: int = Field(64, ge=0)
    """Requests that may wait for a run slot; past it the server answers 429."""
    max_n: int = Field(64, ge=1)
    """Cap on `n` (choices) and on any strategy option `n` a request asks for."""
    max_budget_tokens: int = Field(262_144, ge=1)
    """Cap on the completion tokens one request may spend over all its generations."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest request body accepted (413 past it)."""
    default_max_tokens: int = Field(512, ge=1)
    """Tokens per generation when the request gives no `max_tokens`."""

    def check_security(self) -> None:
        """Refuse settings that would expose the server: an empty key, or a non-loopback
        address without a key.

        Raises:
            ConfigError: The settings are unsafe; the message says what to set.
        """
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty; give a non-empty key or none")
        if not is_loopback(self.host) and self.api_key is None:
            raise ConfigError(
                f"binding {self.host} exposes the server beyond this machine; set an API key "
                "with --api-key or THREADLOOM_API_KEY, or bind 127.0.0.1"
            )
