"""Starting a Ray cluster on this machine that only this machine's owner can use.

A local cluster that threadloom starts listens on 127.0.0.1 only (GCS, raylets, object manager,
workers, agents) and requires Ray's token authentication; the token file is readable by its
owner only. Ray chooses the addresses its processes listen on from the node's IP address, which
it resolves to the outward-facing one on Linux, so the start pins it to loopback. A Ray without
token authentication, or an environment that turns it off, gets a `ConfigError` instead of an
open cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from threadloom.errors import ConfigError, MissingDependencyError

try:
    import ray
    import ray._private.ray_constants as ray_constants
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("ray", "ray", "Running workers on Ray") from exc

logger = logging.getLogger(__name__)

__all__ = ["LOOPBACK", "secure_token_file", "start_local_cluster", "token_auth_enabled"]

LOOPBACK = "127.0.0.1"
_AUTH_MODE = "RAY_AUTH_MODE"
_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Off, Ray takes the loopback address as the node's IP (its default on macOS and Windows)."""


def start_local_cluster(*, namespace: str, num_cpus: int | None) -> None:
    """Start a new Ray instance on this machine, on loopback and with token authentication.

    Raises:
        ConfigError: This Ray has no token authentication, RAY_AUTH_MODE turns it off, the
            token file cannot be made private, or the cluster did not come up locked down
            (it is shut down again).
    """
    mode = os.environ.get(_AUTH_MODE)
    if mode is not None and mode.lower() != "token":
        raise ConfigError(
            f"{_AUTH_MODE}={mode!r} turns off Ray's token authentication, and threadloom starts "
            "local Ray clusters only with it: unset the variable (or set it to 'token'), or "
            "start Ray yourself and pass its address"
        )
    if token_auth_enabled() is None:
        raise ConfigError(
            f"ray {ray.__version__} has no token authentication, so a local cluster would "
            "accept anyone who can reach it: upgrade with pip install 'ray>=2.60'"
        )
    secure_token_file()
    with _loopback_node():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            namespace=namespace,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
        )
    problems = []
    if not token_auth_enabled():
        problems.append(
            f"token authentication is off (ray {ray.__version__} does not turn it on for new "
            "local clusters: upgrade with pip install 'ray>=2.60')"
        )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        problems.append(f"its node address is {node_ip}, not {LOOPBACK}")
    if problems:
        ray.shutdown()
        raise ConfigError(f"the local Ray cluster was not locked down: {'; '.join(problems)}")


def token_auth_enabled() -> bool | None:
    """Whether Ray runs with token authentication (None: this Ray has none)."""
    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationMode,
            get_authentication_mode,
        )
    except ImportError:
        return None
    return bool(get_authentication_mode() == AuthenticationMode.TOKEN)


def secure_token_file() -> Path | None:
    """Make sure Ray's token file exists and only its owner can read it.

    The file is RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; a missing one is created with a
    new random token (Ray would create it readable by everyone). Returns None when the token
    comes from RAY_AUTH_TOKEN instead of a file.

    Raises:
        ConfigError: The file is readable by others and cannot be changed.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _make_private(path)
        return path
    with os.fdopen(handle, "w") as out:
        out.write(secrets.token_hex(32))
    logger.info("created a Ray authentication token in %s (readable by its owner only)", path)
    return path


def _make_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        path.chmod(mode & 0o700)
    except OSError as exc:
        raise ConfigError(
            f"the Ray token file {path} is readable by other users (mode {mode:o}) and could "
            f"not be changed ({exc}); run chmod 600 {path}"
        ) from None
    logger.warning("the Ray token file %s was readable by others; it is now mode 600", path)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While Ray starts, resolve this node's IP to loopback, in this process and its children."""
    saved_env = os.environ.get(_LOCAL_ONLY)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOCAL_ONLY] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOCAL_ONLY, None)
        else:
            os.environ[_LOCAL_ONLY] = saved_env
