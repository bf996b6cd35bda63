"""Seccomp filters for the sandbox, compiled to classic BPF with the system's libseccomp.

Two filters, both "allow by default, refuse a short list":

* the *sandbox* filter, handed to bubblewrap (`--seccomp FD`) and so applied to every process
  in the sandbox: it refuses creating sockets of any family (only `socketpair` is left, which
  reaches nothing), tracing or reading other processes' memory, io_uring (whose operations
  bypass seccomp), BPF, perf events, keyrings, mounting, namespace changes and kernel modules;
* the *candidate* filter, which the harness adds in the process that runs the untrusted code:
  no new processes (`fork`, `vfork`, `clone` without `CLONE_THREAD`, `execve`), while threads
  still work. `clone3` answers ENOSYS so that the C library falls back to `clone`, whose flags
  a filter can read.

libseccomp is reached through ctypes (the shared library is part of every mainstream Linux
distribution); no Python bindings are needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from threadloom.errors import SandboxUnavailable

__all__ = ["candidate_filter", "sandbox_filter"]

_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000

_SANDBOX_DENIED = (
    "socket",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
)
"""Refused with EPERM in every process of the sandbox."""

_CANDIDATE_DENIED = ("fork", "vfork", "execve", "execveat")


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _errno_action(code: int) -> int:
    return _ACT_ERRNO | (code & 0xFFFF)


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp")
    try:
        lib = ctypes.CDLL(name or "libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SandboxUnavailable(
            f"libseccomp is not installed ({exc}); install it with "
            "`apt-get install libseccomp2` (Debian/Ubuntu) or `dnf install libseccomp`"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _compile(rules: list[tuple[str, int, _ArgCmp | None]]) -> bytes:
    """Compile (syscall, action, optional argument test) rules; unknown syscalls are skipped."""
    lib = _library()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SandboxUnavailable("libseccomp could not create a filter (seccomp_init failed)")
    try:
        for name, action, test in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a syscall on this architecture
            args = (_ArgCmp * 1)(test) if test is not None else None
            rc = lib.seccomp_rule_add_array(ctx, action, number, 1 if test else 0, args)
            if rc < 0:
                raise SandboxUnavailable(
                    f"libseccomp refused the rule for {name} ({os.strerror(-rc)})"
                )
        fd = os.memfd_create("threadloom-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SandboxUnavailable(f"libseccomp could not export BPF ({os.strerror(-rc)})")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


@functools.cache
def sandbox_filter() -> bytes:
    """The BPF program every process in the sandbox runs under.

    Raises:
        SandboxUnavailable: libseccomp is missing or could not build the filter.
    """
    return _compile([(name, _errno_action(errno.EPERM), None) for name in _SANDBOX_DENIED])


@functools.cache
def candidate_filter() -> bytes:
    """The BPF program the process running the untrusted code adds: threads yes, processes no.

    Raises:
        SandboxUnavailable: libseccomp is missing or could not build the filter.
    """
    denied = _errno_action(errno.EPERM)
    no_thread_flag = _ArgCmp(0, _CMP_MASKED_EQ, _CLONE_THREAD, 0)
    rules: list[tuple[str, int, _ArgCmp | None]] = [
        (name, denied, None) for name in _CANDIDATE_DENIED
    ]
    rules.append(("clone", denied, no_thread_flag))
    rules.append(("clone3", _errno_action(errno.ENOSYS), None))
    return _compile(rules)
