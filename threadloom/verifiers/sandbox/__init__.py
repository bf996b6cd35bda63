"""A sandbox for running untrusted generated code, isolated by the operating system.

Every run is a fresh process tree under bubblewrap (see `threadloom.verifiers.sandbox.bwrap`):
new user, mount, PID, network, IPC, UTS and cgroup namespaces; uid 65534 with no capabilities
and no-new-privs; a file system holding only the interpreter, its standard library and the
system's shared libraries (read-only), a private `/proc`, and a size-capped tmpfs as the only
writable place; an environment of a few fixed variables; a seccomp filter that refuses sockets,
tracing, io_uring, mounts and namespace changes, and, in the process running the untrusted code,
new processes (threads still work); resource limits on CPU time, memory, file size and open
files. The whole tree dies with the wall-clock limit and with the orchestrator (bubblewrap's
parent-death signal and the PID namespace). Nothing is written on the host.

Tests run in a second process of the same sandbox (`run_tests_in_sandbox`); the untrusted code
answers calls over pipes with values of exact builtin types, and only the tests' process can
report the verdict.

Threat model. Contained: reading host files (secrets, home directories, other processes'
environments), writing anywhere on the host, any network or socket access (TCP, Unix sockets such
as Docker's or Ray's), signalling or tracing host processes, outliving the run or the
orchestrator, exhausting disk, processes or memory beyond the limits, and forging the verdict
(exit codes, tokens, always-equal objects). Not contained: a kernel vulnerability reachable
through the syscalls that remain allowed (this is not a virtual machine); CPU, memory bandwidth
and cache side channels; the information in what the sandbox can read (the interpreter, shared
libraries, `/proc/cpuinfo`, the kernel version); the candidate's own functions lying to the
tests about themselves (a problem whose tests call a helper the candidate defines trusts that
helper). Under ``isolation="guards"`` none of the above holds against deliberate code: the
guards stop accidents only, and the code runs as this process's user.

Where bubblewrap or user namespaces are missing, runs raise `SandboxUnavailable` (fail closed)
unless the caller asked for guards.
"""

from threadloom.verifiers.sandbox.limits import Isolation, SandboxLimits, SandboxResult, Verdict
from threadloom.verifiers.sandbox.runner import (
    check_isolation,
    run_in_sandbox,
    run_tests_in_sandbox,
)

__all__ = [
    "Isolation",
    "SandboxLimits",
    "SandboxResult",
    "Verdict",
    "check_isolation",
    "run_in_sandbox",
    "run_tests_in_sandbox",
]
