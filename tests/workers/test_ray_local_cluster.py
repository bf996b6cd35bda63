"""A local Ray cluster that threadloom starts: loopback only, token authentication, private token.

The addresses are the ones the operating system reports for the cluster's processes (psutil),
and a connection from this machine's outward address is refused."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path

import psutil
import pytest
import ray

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest
from threadloom.workers.ray.local import secure_token_file, token_auth_enabled
from threadloom.workers.ray.pool import RayPool

pytestmark = pytest.mark.ray


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket these processes listen on."""
    found = []
    for process in processes:
        try:
            name = process.name()
            sockets = process.net_connections(kind="inet")
        except psutil.Error:
            continue  # ended meanwhile
        for conn in sockets:
            if conn.status == psutil.CONN_LISTEN:
                found.append((name, conn.laddr.ip, conn.laddr.port))
    return found


def outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


async def test_a_local_cluster_listens_on_loopback_only_with_token_auth() -> None:
    assert not ray.is_initialized()
    pool = RayPool("fake:hi", resources={"num_cpus": 0.25}, namespace="threadloom-local-test")
    try:
        request = GenerationRequest(messages=(ChatMessage(role="user", content="go"),))
        assert (await pool.generate(request)).text == "hi"  # an actor's process is running too
        processes = psutil.Process().children(recursive=True)
        sockets = listening(processes)
        names = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets
        exposed = [s for s in sockets if not is_loopback(s[1])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        outward = outward_address()
        if outward is not None:
            for _, _, port in sockets:
                with pytest.raises(OSError):  # refused: nothing listens there
                    socket.create_connection((outward, port), timeout=2).close()
        assert token_auth_enabled()
        gcs = next(p for p in processes if p.name() == "gcs_server")
        assert gcs.environ().get("RAY_AUTH_MODE") == "token"
        if not os.environ.get("RAY_AUTH_TOKEN"):
            assert stat.S_IMODE(token_path().stat().st_mode) == 0o600
    finally:
        await pool.close()
    assert not ray.is_initialized()


def test_a_local_cluster_without_token_auth_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE='disabled'"):
        RayPool("fake:hi", namespace="threadloom-local-test")
    assert not ray.is_initialized()
    started = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not started


def test_a_missing_token_file_is_created_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    made = secure_token_file()
    assert made == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert len(made.read_text()) == 64
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    again = secure_token_file()
    assert again == made and again.read_text() == made.read_text()  # an existing token is kept


def test_a_token_file_readable_by_others_is_made_private(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text("abc123")
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert secure_token_file() == token
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "abc123"
